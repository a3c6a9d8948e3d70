"""Trees nobody designed for us: real sysfs captures without IOMMU data, and kernels with odd attributes."""

import os
import re
import shutil

import pytest

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.address import PciAddress
from passthrough.pci.scan import scan
from tests.realworld_support import HWLOC, HWLOC_CAPTURES, hwloc_capture

needs_hwloc = pytest.mark.skipif(not HWLOC_CAPTURES, reason=f"no hwloc captures under {HWLOC}")


@pytest.fixture(scope="module")
def captures():
    return {name: hwloc_capture(name) for name in HWLOC_CAPTURES}


def _held(root):
    """What the tree holds for each function, read without passthrough: ids, class and driver."""
    devices = root / "sys/bus/pci/devices"
    held = {}
    for name in sorted(os.listdir(devices)) if devices.is_dir() else []:
        values = {}
        for attribute in ("vendor", "device", "class"):
            path = devices / name / attribute
            values[attribute] = path.read_text().strip()[2:] if path.is_file() else None
        driver = devices / name / "driver"
        # A link to a driver directory the capture did not record dangles; what scan() makes
        # of that is pinned by test_a_dangling_driver_link_reads_as_no_driver.
        values["driver"] = os.readlink(driver).rstrip("/").rsplit("/", 1)[1] if driver.is_symlink() else None
        values["driver_resolves"] = driver.exists()
        # A capture may hold plain directories instead of links (hwloc's POWER9): no topology then.
        target = os.readlink(devices / name) if (devices / name).is_symlink() else ""
        path = [
            part for part in target.split("/") if re.fullmatch(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", part)
        ]
        values["parent"] = path[-2] if len(path) > 1 else None
        held[name] = values
    return held


@needs_hwloc
@pytest.mark.parametrize("name", HWLOC_CAPTURES)
def test_a_capture_without_iommu_data_scans_to_functions_without_groups(captures, name):
    root = captures[name]
    inventory = scan(root)
    held = _held(root)
    assert [function.address for function in inventory.devices] == sorted(held, key=PciAddress.parse)
    assert inventory.groups == []
    assert all(function.iommu_group is None for function in inventory.devices)
    for function in inventory.devices:
        values = held[function.address]
        assert function.vendor_id == values["vendor"], function.address
        assert function.device_id == values["device"], function.address
        assert function.class_code == values["class"], function.address
        if values["driver_resolves"] or values["driver"] is None:
            assert function.driver == values["driver"], function.address
        assert function.parent == values["parent"], function.address


@needs_hwloc
def test_the_captures_hold_real_pci_trees(captures):
    counts = {name: len(scan(root).devices) for name, root in captures.items()}
    assert counts["32em64t-2n8c+dax+nvme+mic+dimms"] == 137
    assert counts["32intel64-2p8co2t+8ve"] == 28
    assert counts["40intel64-2g2n4c+pcilocality"] == 37
    assert counts["64amd64-4s2n4ca2co"] == 0  # no PCI tree: an empty inventory, not an error
    nec = scan(captures["32intel64-2p8co2t+8ve"])
    assert sum(f.driver == "ve_drv" for f in nec.devices) == 8  # the NEC Vector Engines
    assert nec.device("0000:17:00.0").class_name == "PCI bridge"
    assert nec.device("0000:18:00.0").parent == "0000:17:00.0"


@needs_hwloc
def test_a_32_bit_pci_domain_parses_and_keeps_its_place(captures):
    inventory = scan(captures["2pa-pcidomain32bits"])
    virtio = inventory.device("10000:00:04.0")
    assert virtio is not None and virtio.pci_address.domain == 0x10000
    assert virtio.sysfs_path == "sys/devices/pci10000:00/10000:00:04.0"
    assert virtio.parent is None
    assert [f.address for f in inventory.devices][-2:] == ["10000:00:00.0", "10000:00:04.0"]


@needs_hwloc
def test_a_power9_capture_with_only_class_and_locality_gives_nulls(captures):
    inventory = scan(captures["nvidiagpunumanodes"])
    gpus = [f for f in inventory.devices if f.class_code == "030000"]
    assert {f.pci_address.domain for f in gpus} == {0x0004, 0x0006, 0x0007, 0x0035}
    assert len(gpus) == 6
    # plain directories with class and local_cpus only: everything else is unknown
    for gpu in gpus:
        assert (gpu.vendor_id, gpu.driver, gpu.reset_methods, gpu.has_reset, gpu.parent) == (
            None,
            None,
            None,
            False,
            None,
        )


# No IOMMU --------------------------------------------------------------------------------------
@needs_hwloc
def test_a_virtual_machine_capture_has_the_hypervisor_flag_and_no_groups(captures):
    root = captures["2pa-pcidomain32bits"]
    assert re.search(r"^flags\s*:.*\bhypervisor\b", (root / "proc/cpuinfo").read_text(), re.MULTILINE)
    assert not (root / "sys/class/iommu").exists()
    inventory = scan(root)
    assert inventory.groups == [] and not inventory.has_iommu_groups
    assert all(function.iommu_group is None for function in inventory.devices)


@needs_hwloc
def test_a_virtual_machine_built_with_an_empty_iommu_class_has_no_groups(captures, make_tree):
    # The same guest as a HostSpec: its real cpuinfo and functions, no IOMMU at all.
    root = captures["2pa-pcidomain32bits"]
    functions = [
        FunctionSpec(address, values["vendor"], values["device"], values["class"], driver=values["driver"])
        for address, values in _held(root).items()
    ]
    spec = HostSpec(functions=functions, cpuinfo=(root / "proc/cpuinfo").read_text(), iommu=None, modules=("kvm",))
    tree = make_tree(spec)
    assert os.listdir(tree / "sys/class/iommu") == []
    inventory = scan(tree)
    assert len(inventory.devices) == len(functions) == 9
    assert inventory.groups == []
    assert all(function.iommu_group is None for function in inventory.devices)


# Odd kernels -----------------------------------------------------------------------------------
@pytest.fixture
def odd_tree(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec(
                "0000:01:00.0", "10de", "1d01", "030000", driver="nouveau", iommu_group=1, parent="0000:00:01.0",
                boot_vga=False, reset_methods=["bus"], link=("8.0 GT/s PCIe", 4, "8.0 GT/s PCIe", 16), numa_node=0,
                sriov_totalvfs=4,
            ),
        ]
    )  # fmt: skip
    return make_tree(spec)


def _attribute(tree, name):
    return tree / "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0" / name


def _make_directory(path):
    path.unlink()
    path.mkdir()


def test_a_missing_class_gives_no_class_and_no_kind(odd_tree):
    _attribute(odd_tree, "class").unlink()
    gpu = scan(odd_tree).device("0000:01:00.0")
    assert (gpu.class_code, gpu.class_name, gpu.kind, gpu.is_display) == (None, None, "other", False)
    assert gpu.vendor_id == "10de"


@pytest.mark.parametrize(
    ("attribute", "field"),
    [
        ("vendor", "vendor_id"), ("device", "device_id"), ("class", "class_code"), ("revision", "revision"),
        ("numa_node", "numa_node"), ("reset_method", "reset_methods"), ("driver_override", "driver_override"),
        ("sriov_totalvfs", "sriov_totalvfs"), ("current_link_speed", "current_link_speed"),
        ("current_link_width", "current_link_width"),
    ],
)  # fmt: skip
def test_a_directory_where_an_attribute_should_be_reads_as_absent(odd_tree, attribute, field):
    _make_directory(_attribute(odd_tree, attribute))
    assert getattr(scan(odd_tree).device("0000:01:00.0"), field) is None


def test_an_unreadable_boot_vga_reads_as_absent(odd_tree):
    _make_directory(_attribute(odd_tree, "boot_vga"))
    assert scan(odd_tree).device("0000:01:00.0").boot_vga is None


@pytest.mark.parametrize(
    ("attribute", "garbage", "field"),
    [
        ("numa_node", "banana\n", "numa_node"), ("sriov_totalvfs", "lots\n", "sriov_totalvfs"),
        ("vendor", "0xzz\n", "vendor_id"), ("class", "\n", "class_code"), ("current_link_width", "x?\n", "current_link_width"),
        ("current_link_speed", "Unknown\n", "current_link_speed"), ("driver_override", "(null)\n", "driver_override"),
    ],
)  # fmt: skip
def test_garbage_in_an_attribute_reads_as_absent(odd_tree, attribute, garbage, field):
    _attribute(odd_tree, attribute).write_text(garbage)
    assert getattr(scan(odd_tree).device("0000:01:00.0"), field) is None


def _dangle_driver(tree):
    driver = _attribute(tree, "driver")
    driver.unlink()
    driver.symlink_to("../../../../bus/pci/drivers/gone")


def test_a_dangling_driver_link_does_not_crash_the_scan(odd_tree):
    _dangle_driver(odd_tree)
    assert scan(odd_tree).device("0000:01:00.0").vendor_id == "10de"


def test_a_driver_link_whose_target_was_not_captured_still_names_the_driver(odd_tree):
    # On a live host the link always resolves. A capture that did not copy sys/bus/pci/drivers
    # (hwloc's, the procfs fixture) still records which driver held the function, so the scan
    # reports it; lspci 3.9 names no driver there, which is why the cross-check compares
    # drivers only where lspci names one.
    _dangle_driver(odd_tree)
    assert scan(odd_tree).device("0000:01:00.0").driver == "gone"


def test_an_iommu_group_link_that_is_not_a_number_gives_no_group(odd_tree):
    link = _attribute(odd_tree, "iommu_group")
    link.unlink()
    link.symlink_to("../../../../kernel/iommu_groups/not-a-number")
    inventory = scan(odd_tree)
    assert inventory.device("0000:01:00.0").iommu_group is None
    assert inventory.group(1).devices == ["0000:00:01.0"]


def test_a_device_link_to_nowhere_gives_a_function_with_nothing_known(odd_tree):
    shutil.rmtree(odd_tree / "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0")
    gpu = scan(odd_tree).device("0000:01:00.0")
    assert (gpu.vendor_id, gpu.class_code, gpu.driver, gpu.iommu_group, gpu.has_reset) == (None, None, None, None, None)
    assert gpu.parent == "0000:00:01.0"  # the link itself still says where it hung


def test_a_tree_without_sys_bus_pci_is_an_empty_inventory(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu hypervisor\n")
    inventory = scan(tmp_path)
    assert inventory.devices == [] and inventory.groups == []
