"""Readiness: the JSON contract, evidence that names real files, robustness on broken trees,
and this machine."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from passthrough.host import HostTree
from passthrough.hosttrees.spec import HostSpec
from passthrough.readiness import is_ready, report, run_checks
from tests.readiness_data import (
    DEBIAN_GRUB,
    DEBIAN_OS_RELEASE,
    grouped_intel_functions,
)
from tests.test_readiness import FUJI_CMDLINE, FUJI_DMAR_LOG, IDS, INTEL_CPU, MakeTree


def test_the_report_keeps_the_json_contract(make_tree: MakeTree) -> None:
    result = report(HostTree(make_tree(HostSpec(functions=grouped_intel_functions()))))
    assert isinstance(result["ready"], bool) and [check["id"] for check in result["checks"]] == IDS
    for check in result["checks"]:
        assert {"id", "status", "evidence", "fix"} <= set(check)
        assert check["status"] in ("pass", "warn", "fail", "skip")
        assert all(set(item) == {"path", "value"} for item in check["evidence"])
    assert json.loads(json.dumps(result)) == result


def test_every_evidence_path_is_a_file_the_tree_has(make_tree: MakeTree) -> None:
    files = {"etc/default/grub": DEBIAN_GRUB, "etc/os-release": DEBIAN_OS_RELEASE, "usr/sbin/update-initramfs": ""}
    root = make_tree(
        HostSpec(
            functions=grouped_intel_functions(),
            cpuinfo=INTEL_CPU,
            cmdline=FUJI_CMDLINE,
            dmesg=FUJI_DMAR_LOG,
            dev_vfio=("vfio",),
            files=files,
        )
    )
    tree = HostTree(root)
    for check in run_checks(tree):
        for item in check.evidence:
            if item.path == "dmesg":
                assert item.value in tree.read("dmesg.txt")  # type: ignore[operator]
            elif item.value not in ("missing",):
                assert tree.exists(item.path), (check.id, item)


def test_run_checks_never_raises_on_an_empty_directory(tmp_path: Path) -> None:
    checks = run_checks(HostTree(tmp_path))
    assert [check.id for check in checks] == IDS and {check.status for check in checks} == {"skip"}
    assert not is_ready(checks)
    assert report(HostTree(tmp_path))["reasons"][0].startswith("Not verified: The tree has no /proc/cpuinfo")


def test_run_checks_never_raises_on_a_tree_missing_proc(make_tree: MakeTree) -> None:
    root = make_tree(HostSpec(functions=grouped_intel_functions()))
    shutil.rmtree(root / "proc")
    checks = {check.id: check for check in run_checks(HostTree(root))}
    assert checks["cpu_virtualization"].status == "skip" and checks["iommu"].status == "pass"
    assert checks["kernel_cmdline"].status == "skip" and checks["vfio_modules"].status == "skip"


def test_garbage_inputs_give_answers_not_exceptions(make_tree: MakeTree) -> None:
    root = make_tree(HostSpec(cmdline='quiet "unbalanced intel_iommu=on -- ="', iommu=None))
    (root / "proc/cpuinfo").write_bytes(b"\xff\xfe\x00flags\x00:\x00vmx\n")
    (root / "proc/interrupts").write_bytes(os.urandom(512))
    (root / "proc/modules").write_text("\n\n   \n")
    (root / "sys/kernel/iommu_groups/not-a-number").mkdir()
    checks = run_checks(HostTree(root))
    assert len(checks) == len(IDS) and not is_ready(checks)


def _machine_has_an_iommu() -> bool:
    try:
        return bool(os.listdir("/sys/class/iommu"))
    except OSError:
        return False


@pytest.mark.skipif(
    _machine_has_an_iommu(), reason="this machine has IOMMU units; the test expects the IOMMU-less build VM"
)
def test_this_machine_is_not_ready_because_it_has_no_iommu() -> None:
    checks = run_checks(HostTree("/"))
    assert [check.id for check in checks] == IDS
    assert all(check.status in ("pass", "warn", "fail", "skip") and check.summary for check in checks)
    iommu = next(check for check in checks if check.id == "iommu")
    assert iommu.status == "fail" and not is_ready(checks)
    assert iommu.evidence[0].path == "/sys/class/iommu"
