"""The Proxmox VE target: hostpciN lines in Proxmox's own option names."""

from __future__ import annotations

import re

import pytest

from passthrough.configgen import ConfigError, build_spec, generate
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import conf_value, desktop_with_quad_nic, hostpci_entries


@pytest.fixture
def inventory(make_tree) -> Inventory:
    return scan(make_tree(desktop_with_quad_nic()))


def conf(inventory: Inventory, addresses: list[str], **options) -> str:
    return generate(inventory, build_spec(inventory, addresses, **options), "proxmox").text


def test_a_whole_device_is_one_entry_written_bus_and_slot(inventory):
    entries = hostpci_entries(conf(inventory, ["01:00.0", "03:00.0"]))
    assert entries == {"hostpci0": {"host": "01:00", "pcie": "1"}, "hostpci1": {"host": "03:00.0", "pcie": "1"}}


def test_part_of_a_device_is_a_list_of_its_functions(inventory):
    entries = hostpci_entries(conf(inventory, ["04:00.0", "04:00.3"]))
    assert entries == {"hostpci0": {"host": "04:00.0;04:00.3", "pcie": "1"}}


def test_a_device_outside_domain_0000_keeps_its_domain(make_tree):
    spec = HostSpec(functions=[FunctionSpec("0001:02:00.0", "8086", "1533", "020000", driver="igb", iommu_group=3)])
    inventory = scan(make_tree(spec))
    assert hostpci_entries(conf(inventory, ["0001:02:00.0"]))["hostpci0"]["host"] == "0001:02:00.0"


def test_pcie_and_machine_q35_come_together_and_i440fx_has_neither(inventory):
    q35 = conf(inventory, ["01:00.0"])
    assert conf_value(q35, "machine") == "q35"
    i440fx = conf(inventory, ["01:00.0"], machine="i440fx")
    assert conf_value(i440fx, "machine") is None
    assert "pcie" not in hostpci_entries(i440fx)["hostpci0"]


def test_primary_gpu_rom_options_use_proxmox_names(inventory):
    config = generate(
        inventory,
        build_spec(inventory, ["01:00.0"], primary_gpu=True, rom_file="/root/roms/gp102-patched.rom"),
        "proxmox",
    )
    entry = hostpci_entries(config.text)["hostpci0"]
    assert entry == {"host": "01:00", "pcie": "1", "x-vga": "1", "romfile": "gp102-patched.rom"}
    assert "/usr/share/kvm/gp102-patched.rom" in config.notes["romfile="]
    assert conf_value(config.text, "vga") == "none"
    rombar_off = hostpci_entries(conf(inventory, ["03:00.0"], rombar=False))["hostpci0"]
    assert rombar_off == {"host": "03:00.0", "pcie": "1", "rombar": "0"}


def test_a_cluster_mapping_replaces_the_host_address_of_the_picked_device(inventory):
    config = generate(inventory, build_spec(inventory, ["01:00.0", "03:00.0"], proxmox_mapping="gpu1080"), "proxmox")
    entries = hostpci_entries(config.text)
    assert entries["hostpci0"] == {"mapping": "gpu1080", "pcie": "1"}
    assert entries["hostpci1"]["host"] == "03:00.0"
    assert "01:00" in config.notes["mapping="]


def test_ovmf_sets_bios_and_says_how_to_make_the_efi_disk(inventory):
    ovmf = conf(inventory, ["01:00.0"])
    assert conf_value(ovmf, "bios") == "ovmf"
    assert "--efidisk0" in ovmf
    seabios = conf(inventory, ["01:00.0"], firmware="seabios")
    assert conf_value(seabios, "bios") is None and "efidisk0" not in seabios


def test_hidden_kvm_vendor_id_hugepages_and_size(inventory):
    text = conf(
        inventory, ["01:00.0"], hide_kvm=True, hv_vendor_id="whatever", hugepages=True, memory_mib=16384, vcpus=8
    )
    assert conf_value(text, "cpu") == "host,hidden=1,hv-vendor-id=whatever"
    assert conf_value(text, "hugepages") == "2"
    assert (conf_value(text, "memory"), conf_value(text, "cores")) == ("16384", "8")
    assert conf_value(conf(inventory, ["01:00.0"]), "cpu") == "host"


def test_every_line_is_a_comment_or_a_proxmox_key(inventory):
    text = conf(inventory, ["01:00.0"], primary_gpu=True, hugepages=True, hide_kvm=True)
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-z][a-z0-9-]*: \S", line), line


def test_more_devices_than_proxmox_allows_are_refused(make_tree):
    functions = [
        FunctionSpec(f"{bus:02x}:00.0", "8086", "1533", "020000", driver="igb", iommu_group=bus) for bus in range(1, 18)
    ]
    inventory = scan(make_tree(HostSpec(functions=functions)))
    spec = build_spec(inventory, [function.address for function in functions])
    with pytest.raises(ConfigError, match="Proxmox allows 16"):
        generate(inventory, spec, "proxmox")
