"""Scenario 1: Intel VT-d with an e1000e, an NVMe drive, a two-function slot, a shared group, SR-IOV."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realkernel_guest.support import device, driver, group, wait_for_driver

pytestmark = pytest.mark.django_db(transaction=True)

E1000E = "0000:00:03.0"


def test_the_guest_has_an_intel_iommu_with_groups():
    assert Path("/sys/class/iommu/dmar0").exists()
    assert len(list(Path("/sys/kernel/iommu_groups").iterdir())) > 5


def test_the_device_command_binds_the_e1000e_to_vfio_and_gives_it_back():
    wait_for_driver(E1000E, "e1000e")
    bound = device("bind", E1000E)
    assert bound["job"]["state"] == "succeeded", bound
    assert driver(E1000E) == "vfio-pci"
    assert Path(f"/dev/vfio/{group(E1000E)}").exists()
    back = device("restore", E1000E)
    assert back["job"]["state"] == "succeeded", back
    assert driver(E1000E) == "e1000e"
