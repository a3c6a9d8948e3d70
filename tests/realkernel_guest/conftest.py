"""Guest-side tests: they run inside a QEMU guest booted by tests/test_realkernel.py, as root,
against its real kernel and emulated IOMMU. Outside a guest they are not collected (see
tests/conftest.py), since they would act on this machine's own devices.

Each test's outcome is appended to $GUEST_RESULTS (one JSON line, flushed) the moment it is
known, and a line marks each test's start: when a guest hangs and is killed, the host still
reports what finished and names the test that was running.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

if os.environ.get("PASSTHROUGH_GUEST") != "1":
    raise pytest.UsageError("tests/realkernel_guest/ runs only inside a guest: run tests/test_realkernel.py")


def _record(entry: dict[str, object]) -> None:
    path = os.environ.get("GUEST_RESULTS")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(entry) + "\n")
            out.flush()
            os.fsync(out.fileno())


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _record({"test": location[2], "event": "started"})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = report.nodeid.rsplit("::", 1)[-1]
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _record({"test": name, "event": "skipped", "text": reason, "seconds": report.duration})
    elif report.failed:
        text = f"({report.when}) {report.longreprtext}"
        _record({"test": name, "event": "failed", "text": text, "seconds": report.duration})
    elif report.when == "call":
        _record({"test": name, "event": "passed", "seconds": report.duration})


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker: object) -> None:
    """The test database, copied from the one the host migrated (tests/realkernel/guest.py).

    pytest-django's own setup would create it and run every migration here, under TCG:
    10 to 15 s of each guest. The copy is this run's database from then on, for this process
    and for the workers it starts (they are given its path).
    """
    from django.conf import settings
    from django.db import connections

    migrated = os.environ.get("GUEST_MIGRATED_DB")
    if not migrated or not os.path.isfile(migrated):
        raise pytest.UsageError(f"no migrated database from the host at GUEST_MIGRATED_DB={migrated!r}")
    name = settings.DATABASES["default"]["TEST"]["NAME"]
    shutil.copyfile(migrated, name)
    for connection in connections.all():
        connection.close()
    settings.DATABASES["default"]["NAME"] = name
    connections["default"].settings_dict["NAME"] = name
