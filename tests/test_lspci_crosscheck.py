"""pciutils reads the same trees: where lspci and scan() both report a fact, they agree.

``lspci -nnkD -A linux-sysfs -O sysfs.path=TREE/sys/bus/pci`` reads a tree through its own
sysfs access code and names devices from the same pci.ids, so it is an independent second
reader of every tree the real-world tests build.
"""

import shutil
import subprocess

import pytest

from passthrough.hosttrees import realworld
from passthrough.hosttrees.listings import parse_lspci
from passthrough.pci.scan import scan
from tests.realworld_support import HWLOC_CAPTURES, hwloc_capture, procfs_tree, tree

pytestmark = pytest.mark.skipif(shutil.which("lspci") is None, reason="pciutils (lspci) is not installed")

# hwloc captures with a PCI tree lspci can read (the POWER9 one holds class files only).
HWLOC_WITH_PCI = [
    name
    for name in ("2pa-pcidomain32bits", "32em64t-2n8c+dax+nvme+mic+dimms", "32intel64-2p8co2t+8ve",
                 "40intel64-2g2n4c+pcilocality", "40intel64-4n10c+pci-conflicts")
    if name in HWLOC_CAPTURES
]  # fmt: skip
TREES = [*realworld.MACHINES, "procfs-fixture", *HWLOC_WITH_PCI]


def _root(name):
    if name == "procfs-fixture":
        return procfs_tree()
    if name in HWLOC_WITH_PCI:
        return hwloc_capture(name)
    return tree(name)


def lspci(root):
    """lspci's view of the tree; stderr may say "Unable to load libkmod resources", which is no failure."""
    result = subprocess.run(
        ["lspci", "-nnkD", "-A", "linux-sysfs", "-O", f"sysfs.path={root}/sys/bus/pci"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {function.address: function for function in parse_lspci(result.stdout)}


@pytest.mark.parametrize("name", TREES)
def test_lspci_and_scan_agree_on_every_function(name):
    root = _root(name)
    seen = lspci(root)
    inventory = scan(root)
    assert sorted(seen) == sorted(function.address for function in inventory.devices)
    for function in inventory.devices:
        other = seen[function.address]
        where = f"{name} {function.address}"
        assert (other.vendor_id, other.device_id) == (function.vendor_id, function.device_id), where
        assert other.class_code == function.class_code[:4], where
        assert other.class_name == function.class_name, where
        if other.driver is not None:
            assert other.driver == function.driver, where
        elif function.driver is not None:
            # lspci names no driver whose directory is missing (a capture without
            # sys/bus/pci/drivers); scan() still reads the link's name (see the robustness tests).
            assert not (root / "sys/bus/pci/devices" / function.address / "driver").exists(), where
        if function.revision is not None:
            assert (other.revision or "00") == function.revision, where  # lspci prints "(rev 00)" never
        if other.subsystem_vendor_id is not None:
            assert (other.subsystem_vendor_id, other.subsystem_device_id) == (
                function.subsystem_vendor_id, function.subsystem_device_id
            ), where  # fmt: skip
        if function.vendor_name and function.device_name:
            assert other.name == f"{function.vendor_name} {function.device_name}", where
        elif function.vendor_name:
            # pci.ids lacks the device; lspci then asks udev's hwdb, or prints "Device".
            assert other.name.startswith(f"{function.vendor_name} "), where


def test_lspci_names_the_drivers_the_sources_listed():
    seen = lspci(tree("asokolsky-fuji"))
    assert seen["0000:00:17.0"].driver == "vfio-pci"
    assert seen["0000:05:00.0"].driver == seen["0000:05:00.1"].driver == "vfio-pci"
    assert seen["0000:03:00.0"].driver == "igb"


def test_lspci_reads_the_32_bit_domain_as_scan_does():
    if "2pa-pcidomain32bits" not in HWLOC_CAPTURES:
        pytest.skip("the hwloc 2pa-pcidomain32bits capture is not on this machine")
    seen = lspci(hwloc_capture("2pa-pcidomain32bits"))
    assert {"10000:00:00.0", "10000:00:04.0"} <= set(seen)
