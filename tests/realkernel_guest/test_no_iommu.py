"""Scenario 3: no vIOMMU at all, yet ``intel_iommu=on``: the kernel prints "DMAR: IOMMU enabled".

There is no DMAR table, so no IOMMU unit and no IOMMU group. Readiness must fail and say
why despite that log line, and a bind must be refused before anything is written: on this
kernel vfio-pci cannot take a device without a group, so the kernel's bind sequence would
leave the device with no driver at all (the last test shows that, by hand).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from passthrough.pci.scan import scan
from passthrough.readiness import report
from tests.realkernel_guest.support import (
    PCI,
    device,
    dmesg_mark,
    dmesg_since,
    driver,
    driver_override,
    wait_for_driver,
)

pytestmark = pytest.mark.django_db(transaction=True)

E1000E = "0000:00:03.0"


def vfio_modules() -> list[str]:
    return [line.split()[0] for line in Path("/proc/modules").read_text().splitlines() if "vfio" in line.split()[0]]


def test_the_kernel_says_dmar_enabled_but_made_no_unit_and_no_group():
    log = dmesg_since(0)
    assert "DMAR: IOMMU enabled" in log
    assert "ACPI: DMAR" not in log  # QEMU publishes no DMAR table without an intel-iommu device
    assert list(Path("/sys/class/iommu").iterdir()) == []
    assert list(Path("/sys/kernel/iommu_groups").iterdir()) == []
    assert not (PCI / E1000E / "iommu_group").exists()


def test_readiness_fails_and_says_there_is_no_iommu_despite_the_log_line():
    found = report("/")
    assert found["ready"] is False
    iommu = next(check for check in found["checks"] if check["id"] == "iommu")
    assert iommu["status"] == "fail"
    # The guest's CPU has the hypervisor flag, so the product names the missing virtual IOMMU.
    summary = "This host is a virtual machine without a virtual IOMMU: /sys/class/iommu is empty and there are no IOMMU groups."
    assert iommu["summary"] == summary
    assert summary in found["reasons"]
    assert {"path": "/sys/class/iommu", "value": "empty"} in iommu["evidence"]
    assert {"path": "/sys/kernel/iommu_groups", "value": "no groups"} in iommu["evidence"]
    assert any(item["value"].endswith("DMAR: IOMMU enabled") for item in iommu["evidence"])
    assert "intel-iommu" in iommu["fix"]
    # The kernel took intel_iommu=on (it printed DMAR: IOMMU enabled) on this AMD CPU: no note may call it idle.
    cmdline = next(check for check in found["checks"] if check["id"] == "kernel_cmdline")
    assert not any("intel_iommu= has no effect" in note for note in cmdline["notes"]), cmdline["notes"]


def test_scan_puts_no_function_in_a_group():
    inventory = scan("/")
    assert inventory.groups == []
    e1000e = inventory.device(E1000E)
    assert e1000e is not None and e1000e.iommu_group is None and e1000e.driver == "e1000e"


def test_a_bind_is_refused_before_anything_is_written():
    wait_for_driver(E1000E, "e1000e")
    assert driver_override(E1000E) is None
    assert vfio_modules() == []

    printed = device("bind", E1000E)

    assert printed["exit"] == 1
    job = printed["job"]
    assert job["state"] == "failed", printed
    assert "The IOMMU is off: the kernel made no IOMMU groups." in job["message"], job
    assert printed["result"] is None  # refused in validation: no operation result, nothing to undo
    steps = job["steps"]
    # Validation failed, and the only other step is the read-back every job ends with: nothing was written.
    assert [step["name"] for step in steps] == ["validate", "snapshot"], steps
    assert steps[0]["ok"] is False and steps[1]["ok"] is True
    assert driver(E1000E) == "e1000e"
    assert driver_override(E1000E) is None
    assert vfio_modules() == []  # not even vfio was loaded
    assert not Path("/dev/vfio").exists()


def test_the_kernels_own_bind_sequence_would_leave_the_device_without_a_driver():
    """Why the refusal matters: driver_override + unbind + drivers_probe, by hand, strands the e1000e."""
    wait_for_driver(E1000E, "e1000e")
    subprocess.run(["modprobe", "vfio-pci"], check=True)
    mark = dmesg_mark()
    try:
        (PCI / E1000E / "driver_override").write_text("vfio-pci")
        (PCI / E1000E / "driver" / "unbind").write_text(E1000E)
        Path("/sys/bus/pci/drivers_probe").write_text(E1000E)  # no error reaches the writer
        assert driver(E1000E) is None
        assert f"vfio-pci: probe of {E1000E} failed with error -22" in dmesg_since(mark)
        assert sorted(path.name for path in Path("/dev/vfio").iterdir()) == ["vfio"]  # no group node
    finally:
        (PCI / E1000E / "driver_override").write_text("\n")
        if driver(E1000E) is None:
            Path("/sys/bus/pci/drivers_probe").write_text(E1000E)
        wait_for_driver(E1000E, "e1000e")
    assert driver_override(E1000E) is None
