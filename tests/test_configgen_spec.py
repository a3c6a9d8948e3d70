"""build_spec: the picks plus what must move with them, and the VMs that cannot work."""

from __future__ import annotations

import pytest

from passthrough.configgen import ConfigError, PassedDevice, VmSpec, build_spec, generate
from passthrough.configgen.layout import guest_slots
from passthrough.errors import InvalidAddress, UnknownDevice
from passthrough.hosttrees.spec import FunctionSpec
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan
from tests.configgen_support import MACHINES, desktop


@pytest.fixture
def inventory(make_tree) -> Inventory:
    return scan(make_tree(desktop()))


def machine(make_tree, name: str) -> Inventory:
    return scan(make_tree(MACHINES[name].host_spec()))


def test_picking_a_gpu_brings_its_audio_function_and_says_why(inventory):
    spec = build_spec(inventory, ["01:00.0"])
    assert [device.address for device in spec.devices] == ["0000:01:00.0", "0000:01:00.1"]
    gpu, audio = spec.devices
    assert gpu.picked and not audio.picked
    assert "same physical device" in audio.added_because
    assert "01:00.0" in audio.added_because


def test_picking_the_audio_function_still_lists_the_gpu_first(inventory):
    spec = build_spec(inventory, ["0000:01:00.1"])
    assert [device.address for device in spec.devices] == ["0000:01:00.0", "0000:01:00.1"]
    assert spec.device("0000:01:00.1").picked
    assert not spec.device("0000:01:00.0").picked


def test_gpu_whose_audio_sits_in_another_group_brings_it_along(make_tree):
    # ashtonian's RX 6700 XT: GPU in group 21, its HDMI audio in group 22, behind a Navi switch.
    inventory = machine(make_tree, "ashtonian-alder-lake")
    spec = build_spec(inventory, ["03:00.0"])
    audio = spec.device("0000:03:00.1")
    assert audio is not None
    assert "same card" in audio.added_because and "IOMMU group 22" in audio.added_because


def test_every_endpoint_of_the_group_is_added_and_its_bridges_stay(make_tree):
    # schplorg's Thunderbolt eGPU: group 14 holds four bridges, the GPU, its audio and the enclosure's USB.
    inventory = machine(make_tree, "schplorg-t480")
    spec = build_spec(inventory, ["09:00.0"])
    assert [device.address for device in spec.devices] == ["0000:09:00.0", "0000:09:00.1", "0000:0a:00.0"]
    usb = spec.device("0000:0a:00.0")
    assert "shares IOMMU group 14" in usb.added_because
    group = inventory.group(14)
    assert not set(group.bridges) & {device.address for device in spec.devices}


def test_without_iommu_groups_only_the_device_own_functions_are_added(make_tree):
    inventory = scan(make_tree(desktop(iommu=False)))
    spec = build_spec(inventory, ["01:00.0"])
    assert [device.address for device in spec.devices] == ["0000:01:00.0", "0000:01:00.1"]


def test_unknown_address_is_refused_naming_it_and_where_it_looked(inventory):
    with pytest.raises(UnknownDevice) as caught:
        build_spec(inventory, ["0000:42:00.0"])
    assert "0000:42:00.0" in caught.value.message
    assert caught.value.path.endswith("sys/bus/pci/devices")


def test_malformed_address_is_refused(inventory):
    with pytest.raises(InvalidAddress):
        build_spec(inventory, ["01:00"])


def test_no_device_is_refused(inventory):
    with pytest.raises(ConfigError, match="No device"):
        build_spec(inventory, [])


def test_bridges_are_never_passed(inventory):
    with pytest.raises(ConfigError, match="bridge"):
        build_spec(inventory, ["00:01.0"])
    with pytest.raises(ConfigError, match="host bridge"):
        build_spec(inventory, ["00:00.0"])


def test_pcie_placement_on_i440fx_is_refused_as_proxmox_does(inventory):
    with pytest.raises(ConfigError, match="q35"):
        build_spec(inventory, ["01:00.0"], machine="i440fx", pcie=True)
    assert not build_spec(inventory, ["01:00.0"], machine="i440fx").uses_pcie
    assert build_spec(inventory, ["01:00.0"], machine="q35").uses_pcie


def test_primary_gpu_goes_to_the_picked_vga_function(inventory):
    spec = build_spec(inventory, ["03:00.0", "01:00.0"], primary_gpu=True)
    assert spec.primary.address == "0000:01:00.0"
    assert [device.address for device in spec.devices if device.x_vga] == ["0000:01:00.0"]


def test_primary_gpu_needs_a_display_device(inventory):
    with pytest.raises(ConfigError, match="display device"):
        build_spec(inventory, ["03:00.0"], primary_gpu=True)


def test_a_3d_controller_cannot_be_the_primary_gpu(make_tree):
    inventory = scan(make_tree(desktop(gpu_class="030200")))
    with pytest.raises(ConfigError, match="not a VGA-compatible controller"):
        build_spec(inventory, ["01:00.0"], primary_gpu=True)


def test_rom_file_goes_to_the_gpu_and_rombar_off_to_a_named_device(inventory):
    spec = build_spec(inventory, ["01:00.0"], rom_file="/usr/share/vgabios/gp102.rom")
    assert spec.device("0000:01:00.0").rom_file == "/usr/share/vgabios/gp102.rom"
    assert spec.device("0000:01:00.1").rom_file is None
    spec = build_spec(inventory, ["01:00.0", "03:00.0"], rombar=False, rom_device="03:00.0")
    assert not spec.device("0000:03:00.0").rombar
    assert spec.device("0000:01:00.0").rombar


def test_rom_option_without_a_clear_device_is_refused(inventory):
    with pytest.raises(ConfigError, match="rom_device"):
        build_spec(inventory, ["03:00.0", "00:14.0"], rombar=False)
    with pytest.raises(ConfigError, match="not one of the devices"):
        build_spec(inventory, ["01:00.0"], rombar=False, rom_device="03:00.0")


@pytest.mark.parametrize(
    "path",
    [
        "gp102.rom",
        "/roms/a,b.rom",
        "/roms/it's.rom",
        "/roms/a\nb.rom",
        "/roms/\x1b[31m.rom",
        "/roms/a\u2028b.rom",
        "/roms/\x85",
    ],
)
def test_rom_file_must_be_a_plain_absolute_path(inventory, path):
    with pytest.raises(ConfigError, match="ROM file"):
        build_spec(inventory, ["01:00.0"], rom_file=path)


def test_rom_file_with_rombar_off_is_refused(inventory):
    with pytest.raises(ConfigError, match="rombar"):
        build_spec(inventory, ["01:00.0"], rom_file="/roms/gp102.rom", rombar=False)


@pytest.mark.parametrize(
    "options, words",
    [
        ({"hv_vendor_id": "thirteen-char"}, "hv_vendor_id"),
        ({"hv_vendor_id": "a,b"}, "hv_vendor_id"),
        ({"name": "my vm"}, "VM name"),
        ({"name": "../etc"}, "VM name"),
        ({"firmware": "coreboot"}, "Firmware"),
        ({"machine": "virt"}, "Machine"),
        ({"memory_mib": 64}, "too small"),
        ({"vcpus": 0}, "vCPUs"),
        ({"proxmox_mapping": "9gpu"}, "mapping"),
    ],
)
def test_unusable_options_are_refused_with_the_value_named(inventory, options, words):
    with pytest.raises(ConfigError, match=words):
        build_spec(inventory, ["01:00.0"], **options)


@pytest.mark.parametrize(
    "options",
    [{"name": "win10\n"}, {"hv_vendor_id": "1234567890\n"}, {"proxmox_mapping": "gpu\n"}],
)
def test_a_newline_after_an_otherwise_good_option_is_refused(inventory, options):
    # re.match's "$" also matches before a final newline, which then reached the Proxmox config.
    with pytest.raises(ConfigError) as caught:
        build_spec(inventory, ["01:00.0"], **options)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("address", ["01:00.0", "0000:01:00.0\n", " 0000:01:00.0", "0000:01:00.0\u2028"])
def test_a_hand_built_spec_names_its_devices_by_full_address(inventory, address):
    # Addresses are written into every target as they are; build_spec writes them in full itself.
    spec = VmSpec(devices=[PassedDevice(address)])
    with pytest.raises(ConfigError, match="full form"):
        generate(inventory, spec, "qemu")


def test_hand_built_spec_is_validated_before_generating(inventory):
    spec = VmSpec(devices=[PassedDevice("0000:05:00.0")])
    with pytest.raises(UnknownDevice):
        generate(inventory, spec, "qemu")
    spec = VmSpec(devices=[PassedDevice("0000:01:00.0"), PassedDevice("0000:01:00.0")])
    with pytest.raises(ConfigError, match="twice"):
        generate(inventory, spec, "libvirt")
    spec = VmSpec(devices=[PassedDevice("0000:01:00.0", x_vga=True)])
    with pytest.raises(ConfigError, match="no primary GPU"):
        generate(inventory, spec, "proxmox")


def test_unknown_target_is_refused_listing_the_targets(inventory):
    spec = build_spec(inventory, ["01:00.0"])
    with pytest.raises(ConfigError) as caught:
        generate(inventory, spec, "xen")
    assert "qemu, libvirt, proxmox, vmware, hyperv" in caught.value.hint


def test_spec_serialises_to_json_with_the_reasons(inventory):
    spec = build_spec(inventory, ["01:00.0"], primary_gpu=True, hugepages=True)
    data = spec.to_json()
    assert data["devices"][1]["added_because"].startswith("function of the same physical device")
    assert data["devices"][0]["x_vga"] is True
    assert data["hugepages"] is True


def test_vfs_sharing_a_slot_number_get_a_guest_slot_each(make_tree):
    spec = desktop()
    spec.functions.append(
        FunctionSpec(
            "07:00.0", "8086", "1521", "020000", driver="igb", iommu_group=20, sriov_totalvfs=7, sriov_numvfs=2
        )
    )
    for number, address in enumerate(("07:10.0", "07:10.4")):
        spec.functions.append(
            FunctionSpec(
                address, "8086", "1520", "020000", driver="vfio-pci", iommu_group=21 + number, physfn="07:00.0"
            )
        )
    inventory = scan(make_tree(spec))
    vm = build_spec(inventory, ["07:10.4", "07:10.0"])
    assert [device.address for device in vm.devices] == ["0000:07:10.4", "0000:07:10.0"]
    assert all(device.is_vf and device.picked for device in vm.devices)
    slots = guest_slots(vm)
    assert [[(device.address, number) for device, number in slot.functions] for slot in slots] == [
        [("0000:07:10.4", 0)],
        [("0000:07:10.0", 0)],
    ]
    assert len(build_spec(inventory, ["07:10.0"]).devices) == 1
