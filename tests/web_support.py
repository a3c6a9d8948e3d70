"""Helpers for the page tests: named users in each role, a host with a real-world snapshot.

The host is the asokolsky "duo" machine from passthrough.hosttrees.realworld (a GT 1030 with its
HDMI audio in IOMMU group 2, the root NVMe host-critical in group 14), laid out as a
tree and scanned the way a worker does, so pages render what a real snapshot holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from passthrough.host import HostTree
from passthrough.hosttrees import realworld
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.tree import write_tree
from webui.accounts.roles import OPERATOR, VIEWER, set_role
from webui.hosts.models import Host, Snapshot
from webui.hosts.snapshots import take_snapshot

PASSWORD = "correct horse battery staple"
DUO_GPU = "0000:01:00.0"
DUO_GPU_AUDIO = "0000:01:00.1"
DUO_GPU_GROUP = 2
DUO_NVME = "0000:05:00.0"  # holds the root filesystem
DUO_NVME_GROUP = 14
DUO_BRIDGES_ONLY_GROUP = 6  # a root port alone: nothing to pass
DUO_CHIPSET_GROUP = 10  # LPC and SMBus: never passable


def make_user(username: str, role: str | None) -> Any:
    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    if role:
        set_role(user, role)
    return user


def signed_in(user: Any, **client_options: Any) -> Client:
    client = Client(**client_options)
    client.force_login(user)
    return client


def snapshot_host(name: str, spec: HostSpec, root: Path) -> tuple[Host, Snapshot]:
    write_tree(spec, root)
    host, _ = Host.objects.get_or_create(name=name, defaults={"root": str(root)})
    return host, take_snapshot(host, HostTree(str(root)), Snapshot.Source.STARTUP)


def no_iommu_host() -> HostSpec:
    """A GPU box booted without the IOMMU: no groups, no vfio."""
    return HostSpec(
        functions=[
            FunctionSpec("0000:00:00.0", "8086", "3e30", "060000", iommu_group=None),
            FunctionSpec("0000:01:00.0", "10de", "1d01", "030000", "a1", driver="nouveau", iommu_group=None),
        ],
        iommu=None,
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda2 ro quiet",
    )


@pytest.fixture
def viewer(db: None) -> Any:
    return make_user("vera", VIEWER)


@pytest.fixture
def operator(db: None) -> Any:
    return make_user("otto", OPERATOR)


@pytest.fixture
def viewer_client(viewer: Any) -> Client:
    return signed_in(viewer)


@pytest.fixture
def operator_client(operator: Any) -> Client:
    return signed_in(operator)


@pytest.fixture
def duo(db: None, tmp_path: Path) -> Host:
    host, _ = snapshot_host("duo", realworld.asokolsky_duo(), tmp_path / "duo")
    return host


@pytest.fixture
def test_broker() -> Iterator[None]:
    """Tasks go to the test Redis database, where no worker takes them: jobs stay queued."""
    from tests.worker_support import flush_test_redis, point_broker, redis_available, redis_url

    if not redis_available():
        pytest.skip("needs Redis at REDIS_URL (scripts/test starts one)")
    before = point_broker(redis_url())
    flush_test_redis()
    yield
    flush_test_redis()
    point_broker(before)


@pytest.fixture
def dead_broker() -> Iterator[None]:
    """The Celery app pointed at a port where nothing listens, as when Redis is down."""
    from tests.worker_support import point_broker

    before = point_broker("redis://:password@127.0.0.1:1/0")
    yield
    point_broker(before)
