"""Host trees of the real-world catalogue, built once per test session.

Writing a tree costs one file per attribute, so every tree is written once per process
(on tmpfs when there is one) and shared by the test modules that read it; tests must not
change a shared tree or inventory. Trees with their own host context get their own key.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from passthrough import realworld
from passthrough.inventory import Inventory, scan
from passthrough.treebuilder import HostSpec, write_tree

REALWORLD = Path("/work/shared/fixtures/realworld")
needs_shared_fixtures = pytest.mark.skipif(not REALWORLD.is_dir(), reason=f"{REALWORLD} is not on this machine")


@functools.cache
def _base() -> Path:
    fast = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    base = Path(tempfile.mkdtemp(prefix="realworld-trees-", dir=fast))
    atexit.register(shutil.rmtree, base, True)
    return base


_BUILDERS: dict[str, Callable[[], HostSpec]] = {}


def tree(key: str, build: Callable[[], HostSpec] | None = None) -> Path:
    """The tree of catalogue machine ``key``, or of ``build()`` stored under ``key``."""
    if build is not None:
        _BUILDERS.setdefault(key, build)
    return _written(key)


@functools.cache
def _written(key: str) -> Path:
    build = _BUILDERS.get(key) or realworld.MACHINES[key]
    root = _base() / key
    write_tree(build(), root)
    return root


def inventory(key: str, build: Callable[[], HostSpec] | None = None) -> Inventory:
    """scan() of :func:`tree`, once per key."""
    return _scanned(tree(key, build))


@functools.cache
def _scanned(root: Path) -> Inventory:
    return scan(root)


def source(path: str) -> str:
    """A file of the shared real-world fixtures."""
    return (REALWORLD / path).read_text(encoding="utf-8", errors="replace")
