"""What a worker tells the install about its host when it starts, and which version of the app it runs.

The facts come from the host tree the worker reads: its kernel release, its CPU vendor, and
whether the IOMMU is on (the readiness check's own verdict and finding). The version is the project's version plus the commit of
the checkout it runs from, so the host list can point out a host left on an older checkout.
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from django.utils import timezone

from passthrough.host import HostTree
from passthrough.readiness.facts import HostFacts
from passthrough.readiness.iommu import check_iommu
from webui.hosts.models import Host

REPO = Path(__file__).resolve().parent.parent.parent
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def host_facts(tree: HostTree) -> dict[str, Any]:
    """The Host fields a worker fills in about its host (never guessed: empty, or None, when unread)."""
    facts = HostFacts(tree)
    iommu = check_iommu(facts)
    return {
        "kernel": (tree.read("proc/sys/kernel/osrelease") or "").strip()[:200],
        "cpu_vendor": ((facts.cpu.vendor_id if facts.cpu else None) or "")[:40],
        "iommu_enabled": {"pass": True, "fail": False}.get(iommu.status),
        "iommu_detail": iommu.summary[:300],
        "worker_version": app_version(),
    }


def register(host: Host, tree: HostTree) -> Host:
    """Record the worker's start and what it found; the host is seen from now on."""
    now = timezone.now()
    facts = host_facts(tree)
    Host.objects.filter(pk=host.pk).update(registered=now, last_seen=now, **facts)
    host.refresh_from_db()
    return host


@cache
def app_version() -> str:
    """ "0.1.0+3583cb1": pyproject's version and the checkout's commit (read from .git, no git command)."""
    try:
        version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        version = "unknown"
    commit = _commit(REPO / ".git")
    return f"{version}+{commit[:7]}" if commit else str(version)


def _commit(git: Path) -> str | None:
    """HEAD's commit, following one symbolic ref through loose or packed refs; None outside a checkout.

    Read from the files rather than by running git, which refuses a checkout owned by
    another user (the root worker runs from a checkout its admin owns).
    """
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return None
    if _COMMIT.match(head):
        return head
    if not head.startswith("ref: "):
        return None
    ref = head[5:]
    try:
        value = (git / ref).read_text().strip()
        return value if _COMMIT.match(value) else None
    except OSError:
        pass
    try:
        for line in (git / "packed-refs").read_text().splitlines():
            commit, _, name = line.partition(" ")
            if name == ref and _COMMIT.match(commit):
                return commit
    except OSError:
        return None
    return None
