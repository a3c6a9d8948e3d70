"""Scenario 2: AMD-Vi (QEMU's amd-iommu, interrupt remapping on) with one e1000e.

The product scans the live tree, finds the host ready because of AMD-Vi, binds the
e1000e's group to vfio-pci and gives it back, each checked in sysfs and /dev/vfio.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from passthrough.pci.scan import scan
from passthrough.readiness import report
from tests.realkernel_guest.support import PCI, device, dmesg_since, driver, driver_override, group, wait_for_driver

pytestmark = pytest.mark.django_db(transaction=True)

E1000E = "0000:00:04.0"
AMD_IOMMU = "0000:00:01.0"  # QEMU's amd-iommu is a PCI function of its own


def checks_by_id(found: dict) -> dict[str, dict]:
    return {check["id"]: check for check in found["checks"]}


def test_the_kernel_runs_amd_vi_with_interrupt_remapping():
    assert sorted(path.name for path in Path("/sys/class/iommu").iterdir()) == ["ivhd0"]
    log = dmesg_since(0)
    assert "AMD-Vi: Interrupt remapping enabled" in log
    assert "DMAR:" not in log
    assert "IR-PCI-MSI" in Path("/proc/interrupts").read_text() or "IR-IO-APIC" in Path("/proc/interrupts").read_text()


def test_scan_gives_the_e1000e_a_group_of_its_own_and_the_iommu_none():
    inventory = scan("/")
    e1000e = inventory.device(E1000E)
    assert e1000e is not None and e1000e.driver == "e1000e"
    assert e1000e.iommu_group == group(E1000E)
    own = inventory.group(group(E1000E))
    assert own is not None
    assert own.devices == [E1000E] and own.endpoints == [E1000E]
    assert own.viable, own.reasons
    # The kernel puts every function in a group except the AMD IOMMU itself.
    iommu = inventory.device(AMD_IOMMU)
    assert iommu is not None and iommu.vendor_id == "1022" and iommu.iommu_group is None
    assert not (PCI / AMD_IOMMU / "iommu_group").exists()
    grouped = {address for listed in inventory.groups for address in listed.devices}
    assert grouped == {path.name for path in PCI.iterdir()} - {AMD_IOMMU}


def test_readiness_is_ready_on_amd_vi_and_says_so():
    found = report("/")
    assert found["ready"] is True, found["reasons"]
    checks = checks_by_id(found)
    iommu = checks["iommu"]
    assert iommu["status"] == "pass"
    assert "ivhd0 (AMD-Vi)" in iommu["summary"]
    assert {"path": "/sys/class/iommu", "value": "ivhd0 (AMD-Vi)"} in iommu["evidence"]
    remapping = checks["interrupt_remapping"]
    assert remapping["status"] == "pass"
    assert any("AMD-Vi: Interrupt remapping enabled" in item["value"] for item in remapping["evidence"])
    # The harness boots with amd_iommu=on, which this kernel rejects ("AMD-Vi: Unknown option - 'on'");
    # the product's note says the same.
    assert "AMD-Vi: Unknown option - 'on'" in dmesg_since(0)
    assert any("amd_iommu=on is not a valid value" in note for note in checks["kernel_cmdline"]["notes"])


def test_the_device_command_binds_the_e1000e_to_vfio_and_gives_it_back():
    wait_for_driver(E1000E, "e1000e")
    assert driver_override(E1000E) is None
    number = group(E1000E)
    node = Path(f"/dev/vfio/{number}")
    assert not node.exists()

    bound = device("bind", E1000E)
    assert bound.get("job", {}).get("state") == "succeeded", bound
    assert bound["result"]["targets"] == [E1000E]
    assert driver(E1000E) == "vfio-pci"
    assert driver_override(E1000E) == "vfio-pci"
    assert stat.S_ISCHR(node.stat().st_mode)
    assert (PCI / E1000E / "iommu_group").resolve().name == str(number)

    back = device("restore", E1000E)
    assert back.get("job", {}).get("state") == "succeeded", back
    assert driver(E1000E) == "e1000e"
    assert driver_override(E1000E) is None
    assert not node.exists()  # the group's vfio node goes with its last vfio-pci device
    assert group(E1000E) == number
