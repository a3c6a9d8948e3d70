"""Guest-side tests: they run inside a QEMU guest booted by tests/test_realkernel.py, as root,
against its real kernel and emulated IOMMU. Outside a guest they are not collected (see
tests/conftest.py), since they would act on this machine's own devices."""

from __future__ import annotations

import os

import pytest

if os.environ.get("PASSTHROUGH_GUEST") != "1":
    raise pytest.UsageError("tests/realkernel_guest/ runs only inside a guest: run tests/test_realkernel.py")
