"""Readiness: can this host pass a PCI device to a VM, and if not, what exactly to change.

``run_checks(tree)`` returns one :class:`Check` per concern, in the order a user fixes
them; ``report(tree)`` is the JSON contract of ``manage.py readiness``:
``{"ready": bool, "checks": [{"id", "status", "evidence", "fix", ...}]}``. Check ids are
stable. Every check reads through the :class:`~passthrough.host.HostTree`, so a captured
tree gives the same answers its host would.

May import: ``passthrough.host``, ``passthrough.boot`` (the boot loader, the command line and
its files, the initramfs tool: each fix names this host's) and ``passthrough.evidence``.
Not ``passthrough.pci``: readiness reads the IOMMU units and groups as the kernel lists
them, before any scan.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from passthrough.host import HostTree, as_tree
from passthrough.readiness.boot import (
    check_acs_override,
    check_boot_mode,
    check_bootloader,
    check_initramfs_tool,
    check_kernel_cmdline,
)
from passthrough.readiness.check import STATUSES, Check
from passthrough.readiness.cpu import check_cpu_virtualization
from passthrough.readiness.facts import HostFacts
from passthrough.readiness.iommu import check_interrupt_remapping, check_iommu, check_iommu_passthrough_mode
from passthrough.readiness.vfio import check_dev_vfio, check_vfio_modules

__all__ = ["CHECKS", "REQUIRED", "STATUSES", "Check", "is_ready", "reasons", "report", "run_checks"]

CHECKS: tuple[Callable[[HostFacts], Check], ...] = (
    check_cpu_virtualization,
    check_iommu,
    check_interrupt_remapping,
    check_iommu_passthrough_mode,
    check_vfio_modules,
    check_dev_vfio,
    check_boot_mode,
    check_bootloader,
    check_initramfs_tool,
    check_acs_override,
    check_kernel_cmdline,
)
# A host is ready only when these ran: a tree that lacks the inputs proves nothing.
REQUIRED = ("cpu_virtualization", "iommu", "vfio_modules")


def run_checks(tree: HostTree | str | os.PathLike[str], facts: HostFacts | None = None) -> list[Check]:
    """Every check, on ``facts`` when the caller read them already (the worker's snapshot shares them)."""
    facts = facts if facts is not None else HostFacts(as_tree(tree))
    return [check(facts) for check in CHECKS]


def is_ready(checks: list[Check]) -> bool:
    """No check failed, and the checks that decide readiness could read their inputs."""
    by_id = {check.id: check for check in checks}
    if any(check.status == "fail" for check in checks):
        return False
    return all(identifier in by_id and by_id[identifier].status != "skip" for identifier in REQUIRED)


def reasons(checks: list[Check]) -> list[str]:
    """Why a host is not ready, one sentence per failed or unverifiable required check."""
    found = [check.summary for check in checks if check.status == "fail"]
    found += [f"Not verified: {check.summary}" for check in checks if check.id in REQUIRED and check.status == "skip"]
    return found


def report(tree: HostTree | str | os.PathLike[str], facts: HostFacts | None = None) -> dict[str, Any]:
    host = as_tree(tree)
    checks = run_checks(host, facts)
    return {
        "ready": is_ready(checks),
        "root": host.root,
        "reasons": reasons(checks),
        "checks": [check.to_json() for check in checks],
    }
