"""Shared fixtures. Keep this file small: helpers specific to one area live beside its tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from passthrough.hosttrees.spec import HostSpec
from passthrough.hosttrees.tree import write_tree

# start_worker: a real Celery worker process on a test tree (tests/worker_support.py);
# signed-in clients, snapshots and the live server for page tests (tests/web_support.py).
pytest.register_assert_rewrite("tests.web_support", "tests.worker_support")
pytest_plugins = ["tests.worker_support", "tests.web_support"]


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[[HostSpec], Path]:
    """Write a HostSpec under a fresh directory and return its root."""
    counter = iter(range(1000))

    def build(spec: HostSpec) -> Path:
        root = tmp_path / f"host{next(counter)}"
        write_tree(spec, root)
        return root

    return build


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """tests/realkernel_guest/ acts on the kernel it runs on: only a guest collects it."""
    import os

    if "realkernel_guest" in collection_path.parts and os.environ.get("PASSTHROUGH_GUEST") != "1":
        return True
    return None
