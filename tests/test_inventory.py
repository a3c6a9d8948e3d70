"""scan() reads what the kernel exposes, and nothing it does not."""

import json
import os

import pytest

from passthrough.host import HostTree
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.model import Inventory
from passthrough.pci.scan import scan

GPU_HOST = HostSpec(
    functions=[
        FunctionSpec("0000:00:00.0", "8086", "3ec2", "060000", "07", iommu_group=1),
        FunctionSpec("0000:00:01.0", "8086", "1901", "060400", "07", driver="pcieport", iommu_group=2),
        FunctionSpec(
            "0000:01:00.0", "10de", "1d01", "030000", "a1", "1458", "3747", driver="nouveau", iommu_group=2,
            parent="0000:00:01.0", boot_vga=False, reset_methods=["flr", "bus"], link=("8.0 GT/s PCIe", 4, "8.0 GT/s PCIe", 4),
            numa_node=0,
        ),
        FunctionSpec("0000:01:00.1", "10de", "0fb8", "040300", "a1", "1458", "3747", driver="snd_hda_intel", iommu_group=2, parent="0000:00:01.0", has_reset=True),
    ]
)  # fmt: skip


def test_every_attribute_is_read_in_the_documented_form(make_tree):
    inventory = scan(make_tree(GPU_HOST))
    gpu = inventory.device("0000:01:00.0")
    assert (gpu.vendor_id, gpu.device_id, gpu.class_code, gpu.revision) == ("10de", "1d01", "030000", "a1")
    assert (gpu.subsystem_vendor_id, gpu.subsystem_device_id) == ("1458", "3747")
    assert gpu.vendor_name == "NVIDIA Corporation"
    assert gpu.device_name == "GP108 [GeForce GT 1030]"
    assert gpu.class_name == "VGA compatible controller"
    assert gpu.driver == "nouveau"
    assert gpu.driver_override is None  # the kernel prints "(null)"
    assert gpu.iommu_group == 2
    assert gpu.reset_methods == ["flr", "bus"]
    assert gpu.has_reset is True
    assert gpu.boot_vga is False
    assert (gpu.current_link_speed, gpu.current_link_width) == ("8.0 GT/s PCIe", 4)
    assert gpu.numa_node == 0
    assert gpu.parent == "0000:00:01.0"
    assert gpu.bridges == ["0000:00:01.0"]


def test_absent_facts_are_null_not_guessed(make_tree):
    inventory = scan(make_tree(GPU_HOST))
    audio = inventory.device("0000:01:00.1")
    assert audio.reset_methods is None  # no reset_method file: an older kernel
    assert audio.has_reset is True
    assert audio.boot_vga is None  # the kernel writes boot_vga for display functions only
    assert audio.current_link_speed is None
    assert audio.numa_node is None  # -1 from the kernel
    assert audio.sriov_totalvfs is None
    host_bridge = inventory.device("0000:00:00.0")
    assert host_bridge.driver is None
    assert host_bridge.has_reset is False


def test_chain_of_bridges_runs_up_to_the_root_port(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "1022", "1483", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec(
                "0000:01:00.0", "1002", "1478", "060400", driver="pcieport", iommu_group=2, parent="0000:00:01.0"
            ),
            FunctionSpec(
                "0000:02:00.0", "1002", "1479", "060400", driver="pcieport", iommu_group=3, parent="0000:01:00.0"
            ),
            FunctionSpec(
                "0000:03:00.0", "1002", "73df", "030000", driver="amdgpu", iommu_group=4, parent="0000:02:00.0"
            ),
        ]
    )
    gpu = scan(make_tree(spec)).device("0000:03:00.0")
    assert gpu.bridges == ["0000:02:00.0", "0000:01:00.0", "0000:00:01.0"]
    assert gpu.root_port == "0000:00:01.0"
    assert gpu.parent == "0000:02:00.0"


def test_sriov_physical_and_virtual_functions_link_each_other(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec(
                "0000:a2:00.0",
                "8086",
                "159b",
                "020000",
                driver="ice",
                iommu_group=10,
                sriov_totalvfs=128,
                sriov_numvfs=2,
            ),
            FunctionSpec(
                "0000:a2:10.0", "8086", "1889", "020000", driver="iavf", iommu_group=11, physfn="0000:a2:00.0"
            ),
            FunctionSpec(
                "0000:a2:10.1", "8086", "1889", "020000", driver="iavf", iommu_group=12, physfn="0000:a2:00.0"
            ),
        ]
    )
    inventory = scan(make_tree(spec))
    pf = inventory.device("0000:a2:00.0")
    assert (pf.sriov_totalvfs, pf.sriov_numvfs) == (128, 2)
    assert pf.virtfns == ["0000:a2:10.0", "0000:a2:10.1"]
    assert inventory.device("0000:a2:10.1").physfn == "0000:a2:00.0"
    assert inventory.device("0000:a2:10.1").is_vf


def test_json_contract_has_the_documented_fields_and_types(make_tree):
    data = json.loads(json.dumps(scan(make_tree(GPU_HOST)).to_json()))
    device = next(item for item in data["devices"] if item["address"] == "0000:01:00.0")
    for key in ("address", "vendor_id", "device_id", "class", "vendor_name", "device_name", "driver", "iommu_group",
                "reset_methods", "boot_vga", "sriov_totalvfs", "sriov_numvfs", "physfn", "parent"):  # fmt: skip
        assert key in device, key
    assert device["class"] == "030000" and isinstance(device["iommu_group"], int)
    group = next(item for item in data["groups"] if item["id"] == 2)
    for key in ("id", "devices", "viable", "reasons", "host_critical"):
        assert key in group, key
    assert group["devices"] == ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"]


def test_json_round_trips_to_an_equal_inventory(make_tree):
    original = scan(make_tree(GPU_HOST))
    again = Inventory.from_json(json.loads(json.dumps(original.to_json())))
    assert again.to_json() == original.to_json()
    assert again.group_of("0000:01:00.1").id == 2


def test_an_empty_directory_scans_to_nothing(tmp_path):
    inventory = scan(HostTree(tmp_path))
    assert inventory.devices == [] and inventory.groups == []


def test_odd_kernels_never_crash_a_scan(make_tree):
    root = make_tree(GPU_HOST)
    devices = root / "sys/bus/pci/devices"
    gpu = devices / "0000:01:00.0"
    os.remove(gpu / "class")
    (gpu / "numa_node").write_text("not-a-number\n")
    os.remove(gpu / "vendor")
    os.mkdir(gpu / "vendor")  # a directory where a file should be
    audio = devices / "0000:01:00.1"
    os.remove(audio / "driver")
    os.symlink("../../../bus/pci/drivers/gone", audio / "driver")  # dangling: the name still tells
    (audio / "current_link_width").write_text("garbage\n")
    os.remove(devices / "0000:00:00.0" / "iommu_group")
    inventory = scan(root)
    broken = inventory.device("0000:01:00.0")
    assert broken.class_code is None and broken.vendor_id is None and broken.numa_node is None
    assert broken.class_name is None and broken.vendor_name is None
    assert inventory.device("0000:01:00.1").driver == "gone"
    assert inventory.device("0000:00:00.0").iommu_group is None


def test_an_absolute_device_link_left_by_a_careless_copy_still_resolves(make_tree):
    root = make_tree(GPU_HOST)
    link = root / "sys/bus/pci/devices/0000:01:00.1"
    target = os.path.realpath(link)
    os.unlink(link)
    os.symlink(target, link)  # absolute, as a careless copy would leave it
    function = scan(root).device("0000:01:00.1")
    assert function.parent == "0000:00:01.0"


@pytest.mark.parametrize("name", ["vfio-pci", "0000:01:00.0 "])
def test_stray_entries_in_the_devices_directory_are_ignored(make_tree, name):
    root = make_tree(GPU_HOST)
    (root / "sys/bus/pci/devices" / name).mkdir()
    assert len(scan(root).devices) == 4
