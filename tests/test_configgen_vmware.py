"""The VMware ESXi target: pciPassthruN entries in a .vmx."""

from __future__ import annotations

import re

import pytest

from passthrough.configgen import Bar, build_spec, generate
from passthrough.configgen.layout import GIB, MIB
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import desktop_with_quad_nic


@pytest.fixture
def inventory(make_tree) -> Inventory:
    return scan(make_tree(desktop_with_quad_nic()))


def vmx(inventory: Inventory, addresses: list[str], **options) -> dict[str, str]:
    text = generate(inventory, build_spec(inventory, addresses, **options), "vmware").text
    return parse_vmx(text)


def parse_vmx(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = re.match(r'^([A-Za-z0-9_.]+) = "([^"]*)"$', line)
        assert match, f"not a .vmx line: {line!r}"
        values[match.group(1)] = match.group(2)
    return values


def test_each_function_is_a_pci_passthru_entry_with_its_ids(inventory):
    values = vmx(inventory, ["01:00.0"])
    assert {key: value for key, value in values.items() if key.startswith("pciPassthru0.")} == {
        "pciPassthru0.present": "TRUE",
        "pciPassthru0.id": "0000:01:00.0",
        "pciPassthru0.deviceId": "0x1b06",
        "pciPassthru0.vendorId": "0x10de",
        "pciPassthru0.systemId": "REPLACE-WITH-ESXI-SYSTEM-ID",
        "pciPassthru0.pciSlotNumber": "256",
    }
    assert values["pciPassthru1.id"] == "0000:01:00.1"
    assert values["pciPassthru1.deviceId"] == "0x10ef"


def test_slot_numbers_are_distinct_root_port_slots(inventory):
    values = vmx(inventory, ["01:00.0", "03:00.0", "04:00.0", "04:00.1", "04:00.2", "04:00.3"])
    slots = [value for key, value in values.items() if key.endswith(".pciSlotNumber")]
    assert slots == ["256", "1184", "1216", "1248", "1280", "2208", "2240"]


def test_comments_say_to_toggle_passthrough_and_where_the_system_id_comes_from(inventory):
    text = generate(inventory, build_spec(inventory, ["03:00.0"]), "vmware").text
    assert "Toggle passthrough" in text and "reboot ESXi" in text
    system_id_line = text.splitlines().index('pciPassthru0.systemId = "REPLACE-WITH-ESXI-SYSTEM-ID"')
    assert "ESXi host" in "\n".join(text.splitlines()[system_id_line - 2 : system_id_line])


def test_gpu_with_unknown_bars_gets_the_default_64bit_mmio_window(inventory):
    values = vmx(inventory, ["01:00.0"])
    assert values["pciPassthru.use64bitMMIO"] == "TRUE"
    assert values["pciPassthru.64bitMMIOSizeGB"] == "64"
    assert "pciPassthru.use64bitMMIO" not in vmx(inventory, ["03:00.0"])


@pytest.mark.parametrize(
    "bar_size, window",
    [(16 * GIB, "32"), (24 * GIB, "64"), (48 * GIB, "128"), (256 * MIB, None)],
)
def test_known_bar_sizes_size_the_64bit_window(inventory, bar_size, window):
    bars = {
        "0000:01:00.0": [Bar(0, 16 * MIB, False, False), Bar(1, bar_size, True, True), Bar(3, 32 * MIB, True, True)],
        "0000:01:00.1": [Bar(0, 16 * 1024, False, False)],
    }
    values = vmx(inventory, ["01:00.0"], bars=bars)
    assert values.get("pciPassthru.64bitMMIOSizeGB") == window
    assert ("pciPassthru.use64bitMMIO" in values) == (window is not None)


def test_firmware_memory_reservation_hidden_hypervisor_and_large_pages(inventory):
    values = vmx(inventory, ["01:00.0"], hide_kvm=True, hugepages=True, memory_mib=16384, vcpus=6, name="win10")
    assert values["firmware"] == "efi"
    assert values["hypervisor.cpuid.v0"] == "FALSE"
    assert values["sched.mem.lpage.enable1GPage"] == "TRUE"
    assert values["memSize"] == values["sched.mem.min"] == "16384"
    assert values["sched.mem.pin"] == "TRUE"
    assert (values["numvcpus"], values["displayName"]) == ("6", "win10")
    plain = vmx(inventory, ["01:00.0"], firmware="seabios")
    assert plain["firmware"] == "bios"
    assert "hypervisor.cpuid.v0" not in plain


def test_requirements_cannot_see_the_esxi_toggle(inventory):
    config = generate(inventory, build_spec(inventory, ["01:00.0"]), "vmware")
    by_id = {requirement.id: requirement for requirement in config.host_requirements}
    assert by_id["iommu"].met is True
    assert by_id["esxi-passthrough"].met is None
    assert not any(requirement.id.startswith("vfio:") for requirement in config.host_requirements)
