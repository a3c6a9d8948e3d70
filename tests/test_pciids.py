import os

import pytest

from passthrough.pci import pciids
from passthrough.pci.pciids import PciIds

SAMPLE = b"""#
#\tVersion: test
0001  SafeNet (wrong ID)
10de  NVIDIA Corporation
\t0fb8  GP108 High Definition Audio Controller
\t1d01  GP108 [GeForce GT 1030]
\t\t1458 3747  GV-N1030D5-2GL
\t\t1462 8c98  GeForce GT 1030 2GH LP OC
\t1e84  TU104 [GeForce RTX 2070 SUPER]
10df  Emulex Corporation
\t1ae5  LP6000 Fibre Channel Host Adapter
# a comment between blocks
8086  Intel Corporation
\t1539  I211 Gigabit Network Connection
C 02  Network controller
\t00  Ethernet controller
C 03  Display controller
\t00  VGA compatible controller
\t\t00  VGA controller
\t02  3D controller
C 0c  Serial bus controller
\t03  USB controller
\t\t30  XHCI
"""


@pytest.fixture
def sample() -> PciIds:
    return PciIds(SAMPLE, "sample")


def test_vendor_and_device_names(sample):
    assert sample.vendor("10de") == "NVIDIA Corporation"
    assert sample.device("10de", "1d01") == "GP108 [GeForce GT 1030]"
    assert sample.device("10DE", "1D01") == "GP108 [GeForce GT 1030]"


def test_lookups_stay_inside_their_vendor_block(sample):
    # 1ae5 belongs to Emulex, the next vendor: NVIDIA has no such device.
    assert sample.device("10de", "1ae5") is None
    assert sample.device("10df", "1ae5") == "LP6000 Fibre Channel Host Adapter"
    assert sample.device("8086", "1539") == "I211 Gigabit Network Connection"


def test_subsystem_names_belong_to_their_device(sample):
    assert sample.subsystem("10de", "1d01", "1458", "3747") == "GV-N1030D5-2GL"
    assert sample.subsystem("10de", "1e84", "1458", "3747") is None


def test_class_names_are_the_subclass_as_lspci_prints_them(sample):
    assert sample.class_name("030000") == "VGA compatible controller"
    assert sample.class_name("0c0330") == "USB controller"
    assert sample.class_name("030200") == "3D controller"
    assert sample.class_name("037f00") == "Display controller"  # unknown subclass: the class


def test_unknown_and_absent_ids_are_none(sample):
    assert sample.vendor("ffff") is None
    assert sample.device("ffff", "0000") is None
    assert sample.vendor(None) is None
    assert sample.class_name(None) is None
    assert sample.class_name("ff0000") is None


def test_shipped_copy_names_what_the_system_file_names():
    shipped = PciIds.from_file(pciids.SHIPPED_PATH)
    assert shipped.device("10de", "1d01") == "GP108 [GeForce GT 1030]"
    assert shipped.device("1002", "73df").startswith("Navi 22")
    assert shipped.class_name("010802") == "Non-Volatile memory controller"
    system = next((path for path in pciids.SYSTEM_PATHS if os.path.isfile(path)), None)
    if system is None:
        pytest.skip("no system pci.ids to compare with")
    live = PciIds.from_file(system)
    for vendor, device in [("8086", "1539"), ("144d", "a808"), ("15b7", "5009"), ("1022", "1482")]:
        assert shipped.device(vendor, device) == live.device(vendor, device)


def test_the_override_variable_picks_the_file(monkeypatch, tmp_path):
    custom = tmp_path / "pci.ids"
    custom.write_bytes(SAMPLE)
    monkeypatch.setenv("PASSTHROUGH_PCI_IDS", str(custom))
    pciids.load.cache_clear()
    try:
        assert pciids.load().source == str(custom)
    finally:
        pciids.load.cache_clear()
