"""The Hyper-V target: a Discrete Device Assignment script with location paths from the PCI topology."""

from __future__ import annotations

import re

import pytest

from passthrough.configgen import Bar, build_spec, generate
from passthrough.configgen.hyperv import location_path
from passthrough.configgen.layout import GIB, MIB
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import MACHINES, desktop_with_quad_nic


@pytest.fixture
def inventory(make_tree) -> Inventory:
    return scan(make_tree(desktop_with_quad_nic()))


def script(inventory: Inventory, addresses: list[str], **options) -> str:
    return generate(inventory, build_spec(inventory, addresses, **options), "hyperv").text


def test_location_path_walks_from_the_root_port_to_the_function(inventory):
    assert location_path(inventory.device("0000:01:00.0")) == "PCIROOT(0)#PCI(0100)#PCI(0000)"
    assert location_path(inventory.device("0000:01:00.1")) == "PCIROOT(0)#PCI(0100)#PCI(0001)"
    assert location_path(inventory.device("0000:04:00.3")) == "PCIROOT(0)#PCI(1C04)#PCI(0003)"


def test_a_function_on_the_root_bus_has_one_pci_step(inventory):
    assert location_path(inventory.device("0000:00:02.0")) == "PCIROOT(0)#PCI(0200)"


def test_location_path_through_a_thunderbolt_enclosure(make_tree):
    # schplorg's eGPU: root port 00:1d.0, the laptop's TB3 bridge, then the enclosure's DSL6540 switch.
    inventory = scan(make_tree(MACHINES["schplorg-t480"].host_spec()))
    assert (
        location_path(inventory.device("0000:09:00.0"))
        == "PCIROOT(0)#PCI(1D00)#PCI(0000)#PCI(0100)#PCI(0000)#PCI(0100)#PCI(0000)"
    )


def test_second_root_complex_is_named_by_its_root_bus(make_tree):
    # sirspudd's Threadripper: the RX 580 hangs off the second die's root complex, bus 0x40.
    inventory = scan(make_tree(MACHINES["sirspudd-x399"].host_spec()))
    assert location_path(inventory.device("0000:43:00.0")) == "PCIROOT(40)#PCI(0301)#PCI(0000)"


def test_without_topology_the_script_stops_until_the_path_is_filled_in(make_tree):
    inventory = scan(make_tree(desktop_with_quad_nic()))
    data = inventory.to_json()
    for device in data["devices"]:
        device["sysfs_path"] = None
        device["bridges"] = []
    blind = Inventory.from_json(data)
    assert location_path(blind.device("0000:01:00.0")) is None
    text = script(blind, ["03:00.0"])
    assert "$LocationPath = ''" in text
    assert "throw 'Fill in the location path of 0000:03:00.0 first.'" in text


def test_each_function_is_disabled_dismounted_and_added_in_that_order(inventory):
    text = script(inventory, ["01:00.0"], name="win10")
    commands = [
        line
        for line in text.splitlines()
        if re.match(
            r"^(\$LocationPath =|Disable-PnpDevice|Dismount-VMHostAssignableDevice|Add-VMAssignableDevice)", line
        )
    ]
    assert commands == [
        "$LocationPath = 'PCIROOT(0)#PCI(0100)#PCI(0000)'",
        "Disable-PnpDevice -InstanceId $Device.InstanceId -Confirm:$false",
        "Dismount-VMHostAssignableDevice -Force -LocationPath $LocationPath",
        "Add-VMAssignableDevice -LocationPath $LocationPath -VMName $VMName",
        "$LocationPath = 'PCIROOT(0)#PCI(0100)#PCI(0001)'",
        "Disable-PnpDevice -InstanceId $Device.InstanceId -Confirm:$false",
        "Dismount-VMHostAssignableDevice -Force -LocationPath $LocationPath",
        "Add-VMAssignableDevice -LocationPath $LocationPath -VMName $VMName",
    ]
    assert "$VMName = 'win10'" in text


def test_vm_settings_and_the_way_to_confirm_a_path_on_windows(inventory):
    text = script(inventory, ["01:00.0"])
    assert "Set-VM -Name $VMName -AutomaticStopAction TurnOff" in text
    assert (
        "Set-VM -Name $VMName -GuestControlledCacheTypes $true -LowMemoryMappedIoSpace 3GB "
        "-HighMemoryMappedIoSpace 33280MB" in text
    )
    assert "BAR sizes were not read" in text
    assert "Get-PnpDeviceProperty -KeyName DEVPKEY_Device_LocationPaths" in text
    assert "PCI\\VEN_10DE&DEV_1B06*" in text


def test_known_bars_size_the_mmio_space(inventory):
    small = {"0000:03:00.0": [Bar(0, 128 * 1024, False, False), Bar(3, 16 * 1024, False, False)]}
    config = generate(inventory, build_spec(inventory, ["03:00.0"], bars=small), "hyperv")
    assert "-LowMemoryMappedIoSpace 3GB -HighMemoryMappedIoSpace 33280MB" in config.text
    assert "Microsoft's defaults cover it" in config.notes["-HighMemoryMappedIoSpace"]
    large = {
        "0000:01:00.0": [Bar(0, 16 * MIB, False, False), Bar(1, 32 * GIB, True, True), Bar(3, 32 * MIB, True, True)],
        "0000:01:00.1": [Bar(0, 16 * 1024, False, False)],
    }
    config = generate(inventory, build_spec(inventory, ["01:00.0"], bars=large), "hyperv")
    # 2 x (32 GiB + 32 MiB) + 512 MiB = 66112 MB
    assert "-HighMemoryMappedIoSpace 66112MB" in config.text
    assert "raised to fit" in config.notes["-HighMemoryMappedIoSpace"]


def test_options_hyperv_has_no_equivalent_for_are_named(inventory):
    config = generate(
        inventory, build_spec(inventory, ["01:00.0"], hide_kvm=True, primary_gpu=True, rombar=False), "hyperv"
    )
    assert "hiding the hypervisor" in config.notes["not applicable"]
    assert "primary GPU" in config.notes["not applicable"]
    assert "ROM options" in config.notes["not applicable"]
    assert config.filename == "passthrough-vm-dda.ps1"
