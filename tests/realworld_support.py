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
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from passthrough.hosttrees import realworld
from passthrough.hosttrees.spec import HostSpec
from passthrough.hosttrees.tree import write_tree
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan

REALWORLD = Path("/work/shared/fixtures/realworld")
needs_shared_fixtures = pytest.mark.skipif(not REALWORLD.is_dir(), reason=f"{REALWORLD} is not on this machine")
HWLOC = REALWORLD / "hwloc-linux-sysfs-captures/tarballs"
HWLOC_CAPTURES = (
    sorted(path.name.removesuffix(".tar.bz2") for path in HWLOC.glob("*.tar.bz2")) if HWLOC.is_dir() else []
)
# What scan() and the host-critical checks read. The captures' bulk is sys/devices/system
# (CPU and memory topology for hwloc), which would only slow the unpacking down.
READ_BY_SCAN = ("proc/", "sys/bus/pci", "sys/devices/pci", "sys/class/", "sys/dev/", "sys/block", "sys/kernel")


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


def scratch(name: str) -> Path:
    """A fresh directory on the same fast storage, removed when the session ends."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_base()))


@functools.cache
def hwloc_capture(name: str) -> Path:
    """The hwloc capture ``name`` unpacked; the root folder inside can differ from the tarball's name."""
    destination = scratch(name)
    with tarfile.open(HWLOC / f"{name}.tar.bz2") as archive:
        wanted = [m for m in archive.getmembers() if m.name.partition("/")[2].startswith(READ_BY_SCAN)]
        archive.extractall(destination, members=wanted, filter="data")
    (root,) = [entry for entry in destination.iterdir() if entry.is_dir()]
    return root


@functools.cache
def procfs_tree() -> Path:
    """prometheus/procfs' sysfs fixture (E810 with SR-IOV, an NVMe behind AMD-Vi) unpacked."""
    root = scratch("procfs")
    realworld.unpack_ttar(realworld.ttar_bytes(), str(root))
    # Its iommu_group links point at sys/kernel/iommu_groups/N, which the fixture does not
    # hold: create each group with its devices entry, as the kernel lays them out.
    for link in root.glob("sys/devices/**/iommu_group"):
        group = root / "sys/kernel/iommu_groups" / os.readlink(link).rsplit("/", 1)[1]
        (group / "devices").mkdir(parents=True, exist_ok=True)
        entry = group / "devices" / link.parent.name
        entry.symlink_to(os.path.relpath(link.parent, entry.parent))
    return root


def source(path: str) -> str:
    """A file of the shared real-world fixtures."""
    return (REALWORLD / path).read_text(encoding="utf-8", errors="replace")
