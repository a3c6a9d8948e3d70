"""Scenario 4: two root ports as functions .0 and .1 of slot 08, both without ACS (``disable-acs=on``).

The kernel cannot tell that the two functions of one multifunction device keep each
other's DMA apart, so it puts both ports and what sits behind them (an e1000e, an NVMe
drive) in one IOMMU group. The inventory must say the group holds both endpoints and that
they go together, and a bind of either one takes both, and gives both back.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from passthrough.pci.scan import scan
from tests.realkernel_guest.support import PCI, device, driver, driver_override, group, wait_for_driver

pytestmark = pytest.mark.django_db(transaction=True)

PORT_A, PORT_B = "0000:00:08.0", "0000:00:08.1"
E1000E, NVME = "0000:01:00.0", "0000:02:00.0"  # behind PORT_A and PORT_B
ENDPOINTS = [E1000E, NVME]
PCI_EXT_CAP_ID_ACS = 0x000D


def extended_capabilities(address: str) -> list[int]:
    """The ids of the PCIe extended capabilities in ``address``'s config space (root reads all 4096 bytes)."""
    config = (PCI / address / "config").read_bytes()
    assert len(config) == 4096, f"{address}: only {len(config)} bytes of config space"
    found, offset = [], 0x100
    while offset and len(found) < 64:
        (header,) = struct.unpack_from("<I", config, offset)
        if header in (0, 0xFFFFFFFF):
            break
        found.append(header & 0xFFFF)
        offset = (header >> 20) & 0xFFC
    return found


def test_the_two_root_ports_lack_acs_and_the_kernel_merges_their_groups():
    for port in (PORT_A, PORT_B):
        capabilities = extended_capabilities(port)
        assert capabilities, f"{port} has no extended capabilities at all"
        assert PCI_EXT_CAP_ID_ACS not in capabilities, f"{port} has ACS: {capabilities}"
    assert (PCI / E1000E).resolve().parent.name == PORT_A
    assert (PCI / NVME).resolve().parent.name == PORT_B
    number = group(E1000E)
    assert {group(address) for address in (PORT_A, PORT_B, E1000E, NVME)} == {number}
    members = sorted(path.name for path in Path(f"/sys/kernel/iommu_groups/{number}/devices").iterdir())
    assert members == [PORT_A, PORT_B, E1000E, NVME]


def test_the_inventory_says_the_group_holds_both_and_they_go_together():
    inventory = scan("/")
    shared = inventory.group(group(E1000E))
    assert shared is not None
    assert shared.devices == [PORT_A, PORT_B, E1000E, NVME]
    assert shared.endpoints == ENDPOINTS
    assert shared.bridges == [PORT_A, PORT_B]
    assert shared.move_together == ENDPOINTS
    assert shared.viable
    assert shared.reasons[0] == (
        "All 2 endpoints of this group must be passed together, they cannot be split between host and VM: "
        "01:00.0 (82574L Gigabit Network Connection), 02:00.0 (QEMU NVM Express Controller)."
    )
    assert "2 bridges in the group stay with the host; that is fine." in shared.reasons
    # Either endpoint leads to the same verdict.
    nvme = inventory.device(NVME)
    assert nvme is not None and inventory.group(nvme.iommu_group) is shared


def test_binding_the_nvme_takes_the_e1000e_along_and_restoring_gives_both_back():
    wait_for_driver(E1000E, "e1000e")
    wait_for_driver(NVME, "nvme")
    number = group(NVME)
    node = Path(f"/dev/vfio/{number}")
    assert not node.exists()

    bound = device("bind", NVME)
    assert bound.get("job", {}).get("state") == "succeeded", bound
    assert bound["result"]["targets"] == ENDPOINTS
    assert [driver(address) for address in ENDPOINTS] == ["vfio-pci", "vfio-pci"]
    assert [driver_override(address) for address in ENDPOINTS] == ["vfio-pci", "vfio-pci"]
    assert [driver(port) for port in (PORT_A, PORT_B)] == ["pcieport", "pcieport"]  # the bridges stay
    assert node.is_char_device()

    back = device("restore", NVME)
    assert back.get("job", {}).get("state") == "succeeded", back
    assert [driver(address) for address in ENDPOINTS] == ["e1000e", "nvme"]
    assert [driver_override(address) for address in ENDPOINTS] == [None, None]
    assert not node.exists()
