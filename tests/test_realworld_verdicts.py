"""Group verdicts on real machines: what their owners' listings show, scan() must say."""

import filecmp
import os
import re
from pathlib import Path

import pytest

from passthrough.host import HostTree
from passthrough.hosttrees import listings, realworld
from passthrough.hosttrees.realworld import HostContext
from passthrough.pci.scan import scan
from tests import realworld_support as support
from tests.realworld_support import REALWORLD, inventory, tree


def reasons(group):
    return " ".join(group.reasons)


# GPU and audio in one group ------------------------------------------------------------------
def test_gt1030_and_its_audio_move_together_and_the_root_port_stays():
    group = inventory("asokolsky-duo").group(2)
    assert group.viable
    assert group.endpoints == ["0000:01:00.0", "0000:01:00.1"]
    assert group.move_together == ["0000:01:00.0", "0000:01:00.1"]
    assert group.bridges == ["0000:00:01.0"]
    assert group.companions == []
    assert "The 2 functions of one device go together" in reasons(group)


def test_the_duo_keeps_the_gt1030_of_its_group_listing_not_the_card_of_its_later_lspci():
    gpu = inventory("asokolsky-duo").device("0000:01:00.0")
    assert gpu.device_name == "GP108 [GeForce GT 1030]"
    assert gpu.driver is None
    assert inventory("asokolsky-duo").device("0000:03:00.0").driver == "igb"


# GPU and audio split behind a switch -----------------------------------------------------------
def test_rx6700xt_and_its_audio_in_separate_groups_name_each_other():
    found = inventory("ashtonian-city17")
    gpu, audio = found.group(21), found.group(22)
    assert gpu.viable and audio.viable
    assert gpu.endpoints == ["0000:03:00.0"] and gpu.companions == ["0000:03:00.1"]
    assert audio.endpoints == ["0000:03:00.1"] and audio.companions == ["0000:03:00.0"]
    assert gpu.move_together == ["0000:03:00.0", "0000:03:00.1"]
    assert "sits in group 22; pass it too" in reasons(gpu)
    assert "sits in group 21; pass it too" in reasons(audio)


def test_the_navi_switch_ports_are_bridges_above_the_rx6700xt():
    found = inventory("ashtonian-city17")
    assert found.device("0000:03:00.0").bridges == ["0000:02:00.0", "0000:01:00.0", "0000:00:01.0"]
    assert not found.group(19).viable and not found.group(20).viable  # bridges only


def test_rx560_and_its_audio_share_group_23_on_vfio_pci():
    found = inventory("ashtonian-city17")
    group = found.group(23)
    assert group.viable
    assert group.endpoints == ["0000:04:00.0", "0000:04:00.1"] and group.companions == []
    assert {found.device(a).driver for a in group.endpoints} == {"vfio-pci"}


# The B550 chipset group ------------------------------------------------------------------------
CHIPSET_ENDPOINTS = ["0000:02:00.0", "0000:02:00.1", "0000:04:00.0", "0000:04:00.1", "0000:05:00.0"]


def test_the_b550_chipset_group_with_the_host_gpu_is_not_viable_and_says_why():
    found = inventory("mapmanagement-b550")
    group = found.group(15)
    assert not group.viable
    assert group.endpoints == CHIPSET_ENDPOINTS
    assert group.bridges == ["0000:02:00.2", "0000:03:00.0", "0000:03:08.0"]
    assert group.host_critical == ["0000:04:00.0"]
    assert "04:00.0 (Lexa PRO" in reasons(group) and "is host-critical" in reasons(group)
    assert "EFI VGA" in reasons(group) and "framebuffer console" in reasons(group)


def test_without_host_context_the_chipset_group_still_lists_everything_that_must_go_together():
    found = inventory("mapmanagement-b550-unknown-host", lambda: realworld.mapmanagement_b550(context=HostContext()))
    group = found.group(15)
    assert group.host_critical == []
    assert group.move_together == CHIPSET_ENDPOINTS
    assert "All 5 endpoints of this group must be passed together" in reasons(group)
    assert "RTL8125" in reasons(group) and "SATA" in reasons(group)


def test_the_vega_split_by_acs_names_its_other_half():
    found = inventory("mapmanagement-b550")
    assert found.group(18).companions == ["0000:08:00.1"]
    assert found.group(19).companions == ["0000:08:00.0"]


def test_before_acs_the_huge_group_0_holds_the_host_and_cannot_be_passed():
    found = inventory("mapmanagement-b550-before-acs")
    group = found.group(0)
    assert len(group.devices) == 15
    assert set(group.host_critical) == {"0000:04:00.0", "0000:01:00.0"}  # host GPU; NVMe with root (assumed)
    assert not group.viable
    assert "0000:07:00.0" in group.endpoints  # the RTL8125 sits in it too
    assert "0000:00:01.0" in group.bridges  # a host bridge without a driver stays with the host


def test_before_acs_the_vega_group_is_viable_with_its_bridges():
    group = inventory("mapmanagement-b550-before-acs").group(2)
    assert group.viable
    assert group.endpoints == ["0000:0b:00.0", "0000:0b:00.1"]
    assert group.bridges == ["0000:00:03.0", "0000:00:03.1", "0000:09:00.0", "0000:0a:00.0"]


def test_the_rx6950xt_grouping_splits_gpu_and_audio_behind_the_switch():
    found = inventory("mapmanagement-b550-rx6950xt")
    assert found.group(18).companions == ["0000:08:00.1"] and found.group(18).viable


# The Thunderbolt eGPU group ---------------------------------------------------------------------
def test_the_egpu_group_moves_gpu_audio_and_enclosure_usb_together_and_keeps_the_bridges():
    found = inventory("schplorg-t480")
    group = found.group(14)
    assert group.viable
    assert group.bridges == ["0000:05:01.0", "0000:07:00.0", "0000:08:01.0", "0000:08:04.0"]
    assert group.endpoints == ["0000:09:00.0", "0000:09:00.1", "0000:0a:00.0"]
    assert "All 3 endpoints of this group must be passed together" in reasons(group)
    assert found.device("0000:09:00.0").bridges == [
        "0000:08:01.0", "0000:07:00.0", "0000:05:01.0", "0000:04:00.0", found.device("0000:04:00.0").parent
    ]  # fmt: skip


def test_the_t480_tree_carries_its_owners_grub_and_vfio_files():
    root = tree("schplorg-t480")
    assert "intel_iommu=on" in (root / "etc/default/grub").read_text()
    assert "10de:1c02" in (root / "etc/modprobe.d/vfion.conf").read_text()
    assert (root / "proc/sys/kernel/osrelease").read_text().strip() == "4.18.17-200.fc28.x86_64"


# An SR-IOV NIC ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def procfs_tree():
    return support.procfs_tree()


def test_the_e810_of_the_procfs_fixture_offers_128_vfs_and_has_none_yet(procfs_tree):
    nic = scan(procfs_tree).device("0000:a2:00.0")
    assert (nic.sriov_totalvfs, nic.sriov_numvfs, nic.virtfns) == (128, 0, [])
    assert (nic.vendor_id, nic.device_id, nic.device_name) == ("8086", "159b", "Ethernet Controller E810-XXV for SFP")
    assert (nic.current_link_speed, nic.current_link_width, nic.numa_node) == ("16.0 GT/s PCIe", 8, 1)
    assert nic.reset_methods == ["flr", "bus"]
    assert nic.iommu_group is None  # the fixture records none for it


def test_the_fixtures_nvme_sits_in_group_11_behind_amd_iommu_ivhd0(procfs_tree):
    found = scan(procfs_tree)
    nvme = found.device("0000:01:00.0")
    assert nvme.iommu_group == 11
    assert HostTree(procfs_tree).link_name("sys/bus/pci/devices/0000:01:00.0/iommu") == "ivhd0"
    assert nvme.parent == "0000:00:02.1"
    assert found.group(11).devices == ["0000:01:00.0"] and found.group(11).viable
    assert not found.group(2).viable  # the Renoir GPP bridge alone


def test_the_e810_with_four_vfs_links_each_vf_to_its_pf_and_gives_each_its_group():
    found = inventory("prometheus-e810")
    pf = found.device("0000:a2:00.0")
    vfs = ["0000:a2:01.0", "0000:a2:01.1", "0000:a2:01.2", "0000:a2:01.3"]  # offset 8, stride 1
    assert (pf.sriov_totalvfs, pf.sriov_numvfs, pf.virtfns) == (128, 4, vfs)
    for index, address in enumerate(vfs):
        vf = found.device(address)
        assert vf.physfn == "0000:a2:00.0" and vf.device_id == "1889"
        assert vf.iommu_group == 41 + index
        assert found.group(vf.iommu_group).devices == [address] and found.group(vf.iommu_group).viable
    root = tree("prometheus-e810")
    assert os.readlink(root / "sys/bus/pci/devices/0000:a2:01.2/physfn") == "../0000:a2:00.0"
    assert os.readlink(root / "sys/bus/pci/devices/0000:a2:00.0/virtfn2") == "../0000:a2:01.2"


def test_asking_the_e810_for_more_vfs_than_it_has_is_refused():
    with pytest.raises(ValueError, match="0 to 128 VFs, not 129"):
        realworld.prometheus_e810(129)


# The many-DMAR server ----------------------------------------------------------------------------
ACCELERATORS = {"0b23", "0b25", "4940", "2710"}  # DSA/IAX, QAT, DLB (PROVENANCE)


def test_the_server_has_20_dmar_units_and_every_function_its_group():
    found = inventory("ethanzhf-server")
    assert len(found.devices) == 483
    assert all(function.iommu_group is not None for function in found.devices)
    assert len(found.groups) == 462 and max(group.id for group in found.groups) == 461
    assert sorted(os.listdir(tree("ethanzhf-server") / "sys/class/iommu")) == sorted(f"dmar{n}" for n in range(20))
    assert os.path.exists(tree("ethanzhf-server") / "sys/class/iommu/dmar15/devices/0000:6b:00.0")


def test_each_accelerator_is_alone_in_its_group_and_viable():
    found = inventory("ethanzhf-server")
    accelerators = [f for f in found.devices if f.vendor_id == "8086" and f.device_id in ACCELERATORS]
    assert len(accelerators) == 44
    for function in accelerators:
        group = found.group(function.iommu_group)
        assert group.devices == [function.address] and group.viable, function.address


def test_the_servers_chipset_group_is_not_viable():
    group = inventory("ethanzhf-server").group(62)
    assert not group.viable and "LPC/ISA bridge" in reasons(group)


# An ACS-override board ------------------------------------------------------------------------------
def test_acs_override_splits_the_cezanne_igpu_from_its_audio_with_a_warning():
    found = inventory("naunter-b550")
    gpu, audio = found.group(14), found.group(15)
    assert gpu.viable and audio.viable
    assert gpu.companions == ["0000:05:00.1"] and audio.companions == ["0000:05:00.0"]
    for group in (gpu, audio):
        assert "pcie_acs_override" in reasons(group) and "does not enforce" in reasons(group)


def test_the_apus_psp_usb_and_audio_are_not_gpu_companions():
    found = inventory("naunter-b550")
    for address in ("0000:05:00.2", "0000:05:00.3", "0000:05:00.4", "0000:05:00.6"):
        group = found.group_of(address)
        assert group.companions == [] and group.endpoints == [address]
        assert address not in found.group(14).move_together


# More boards -----------------------------------------------------------------------------------------
def test_x570_gtx1080ti_group_is_viable_with_its_audio():
    group = inventory("joe-p-x570").group(30)
    assert group.viable and group.endpoints == ["0000:0b:00.0", "0000:0b:00.1"] and group.bridges == []


def test_x570_chipset_groups():
    found = inventory("joe-p-x570")
    assert not found.group(15).viable and "SMBus controller" in reasons(found.group(15))
    assert not found.group(16).viable and "Only bridges" in reasons(found.group(16))  # data fabric 00:18.x
    usb = found.group(23)
    assert usb.viable and usb.bridges == ["0000:03:08.0"]
    assert usb.endpoints == ["0000:08:00.0", "0000:08:00.1", "0000:08:00.3"]
    assert found.group(24).endpoints == ["0000:09:00.0"] and found.group(24).viable


def test_threadripper_has_two_root_complexes():
    found = inventory("sirspudd-threadripper")
    assert found.device("0000:43:00.0").bridges == ["0000:40:01.3"]
    assert found.device("0000:0d:00.0").bridges == ["0000:0c:00.0", "0000:0b:00.0", "0000:00:03.1"]
    assert found.device("0000:40:01.3").sysfs_path == "sys/devices/pci0000:40/0000:40:01.3"
    assert found.device("0000:00:03.1").sysfs_path == "sys/devices/pci0000:00/0000:00:03.1"


def test_radeon_vii_is_split_and_rx580_is_whole():
    found = inventory("sirspudd-threadripper")
    assert found.group(20).companions == ["0000:0d:00.1"] and found.group(21).companions == ["0000:0d:00.0"]
    rx580 = found.group(42)
    assert rx580.viable and rx580.endpoints == ["0000:43:00.0", "0000:43:00.1"] and rx580.companions == []


def test_threadripper_kernel_command_line_is_the_owners():
    root = tree("sirspudd-threadripper")
    cmdline = (root / "proc/cmdline").read_text()
    assert "vfio-pci.ids=1002:66af,1002:ab20" in cmdline and "video=efifb:off" in cmdline
    assert "AuthenticAMD" in (root / "proc/cpuinfo").read_text()
    assert os.listdir(root / "sys/class/iommu") == ["ivhd0"]


def test_rx7600_reset_flags_say_a_reset_exists_but_not_which_methods():
    found = inventory("mistikan-anaconda")
    gpu, audio = found.device("0000:03:00.0"), found.device("0000:03:00.1")
    assert (gpu.has_reset, gpu.reset_methods) == (True, None)
    assert (audio.has_reset, audio.reset_methods) == (False, None)
    assert found.group(12).companions == ["0000:03:00.1"] and found.group(13).companions == ["0000:03:00.0"]


def test_arc_a310_gpu_and_audio_on_two_buses_are_one_card_on_vfio_pci():
    found = inventory("onizuka-arc310")
    assert found.group(5).companions == ["0000:04:00.0"] and found.group(6).companions == ["0000:03:00.0"]
    assert {found.device(a).driver for a in ("0000:03:00.0", "0000:04:00.0")} == {"vfio-pci"}
    assert "vfio-pci.ids=8086:56a6,8086:4f92" in (tree("onizuka-arc310") / "proc/cmdline").read_text()


def test_the_arc_listing_alone_has_no_groups_to_judge():
    found = inventory("onizuka-arc310-bare", lambda: realworld.onizuka_arc310(assume_switch=False))
    assert [f.address for f in found.devices] == ["0000:03:00.0", "0000:04:00.0"]
    assert found.groups == []


def test_suprox_i350_functions_share_group_1_with_the_root_port_on_vfio_pci():
    found = inventory("asokolsky-suprox")
    group = found.group(1)
    assert group.viable and group.bridges == ["0000:00:01.0"]
    assert {found.device(a).driver for a in group.endpoints} == {"vfio-pci"}


# Host-critical functions on real trees ------------------------------------------------------------------
def test_the_nvme_with_the_root_filesystem_makes_its_group_not_viable():
    group = inventory("asokolsky-fuji").group(1)
    assert not group.viable and group.host_critical == ["0000:01:00.0"]
    assert "root filesystem" in reasons(group)


def test_the_nic_with_the_default_route_through_vmbr0_makes_its_group_not_viable():
    found = inventory("asokolsky-fuji")
    group = found.group(11)
    assert not group.viable and group.host_critical == ["0000:03:00.0"]
    assert "default route (vmbr0 → enp3s0)" in reasons(group)
    assert found.group(12).viable  # the other I210, on vfio-pci


def test_the_nic_with_the_default_route_on_its_own_makes_its_group_not_viable():
    context = HostContext(boot_vga="0000:04:00.0", default_route_nic="0000:05:00.0")
    found = inventory("asokolsky-nas-route", lambda: realworld.asokolsky_nas(context))
    assert not found.group(16).viable and "default route (enp5s0)" in reasons(found.group(16))
    assert found.group(17).viable  # the X553's second port is its own group


def test_the_bmc_vga_with_a_native_console_is_host_critical():
    context = HostContext(boot_vga="0000:02:00.0", console="native")
    found = inventory("asokolsky-fuji-console", lambda: realworld.asokolsky_fuji(context))
    group = found.group(10)
    assert not group.viable and "framebuffer fb0" in reasons(group)


def test_the_boot_vga_without_a_console_is_not_host_critical():
    found = inventory("asokolsky-nas")
    assert found.device("0000:04:00.0").boot_vga is True
    assert found.host_critical == {}
    assert found.group(15).viable and found.group(15).bridges == ["0000:03:00.0"]


# The catalogue ------------------------------------------------------------------------------------------
def test_the_fuji_context_follows_from_its_lspci():
    text = realworld.source_text("asokolsky-homelab", "extracted/fuji__lspci.block1.txt")
    functions = listings.parse_lspci(text)
    on_host = [f for f in functions if f.driver not in (None, "vfio-pci")]
    assert [f.address for f in on_host if f.class_code.startswith("01")] == [realworld.FUJI.root_controller]
    assert [f.address for f in on_host if f.class_code.startswith("02")] == [realworld.FUJI.default_route_nic]


def test_the_b550_host_gpu_is_the_card_its_provenance_names():
    provenance = realworld.source_text("mapmanagement-gpu-passthrough", "PROVENANCE.txt")
    vendor, device = re.search(r"host GPU Radeon RX 550 \(Lexa (\w{4}):(\w{4})", provenance).groups()
    gpu = inventory("mapmanagement-b550").device(realworld.MAPMANAGEMENT.boot_vga)
    assert (gpu.vendor_id, gpu.device_id) == (vendor, device)


@pytest.mark.parametrize(
    ("name", "context"),
    [
        ("asokolsky-fuji", realworld.FUJI), ("asokolsky-nas", realworld.NAS), ("asokolsky-suprox", realworld.SUPROX),
        ("ethanzhf-server", realworld.ETHANZHF), ("naunter-b550", realworld.NAUNTER),
        ("mistikan-anaconda", realworld.MISTIKAN),
    ],
)  # fmt: skip
def test_a_boot_vga_said_to_be_the_only_display_function_is_the_only_one(name, context):
    displays = [f.address for f in inventory(name).devices if f.is_display]
    assert displays == [context.boot_vga]
    assert inventory(name).device(context.boot_vga).boot_vga is True


def test_kernel_command_lines_are_the_sources():
    duo = realworld.source_text("asokolsky-homelab", "extracted/duo__iommu.block1.txt").splitlines()[2]
    assert (tree("asokolsky-duo") / "proc/cmdline").read_text().strip() == duo
    assert (tree("asokolsky-duo") / "proc/sys/kernel/osrelease").read_text().strip() == "6.8.0-49-generic"
    assert "intel_iommu=on iommu=pt" in (tree("asokolsky-suprox") / "proc/cmdline").read_text()
    assert "amd_iommu=on" in (tree("mapmanagement-b550") / "proc/cmdline").read_text()
    assert (tree("naunter-b550") / "proc/cmdline").read_text().strip() == "pcie_acs_override=downstream,multifunction"
    assert (tree("joe-p-x570") / "proc/cmdline").read_text().strip() == ""  # the source gives none


def test_every_machine_states_its_cpu_and_iommu_kind():
    for name, build in realworld.MACHINES.items():
        spec = build()
        assert spec.iommu in ("intel", "amd"), name
        assert spec.cpu_vendor == {"intel": "GenuineIntel", "amd": "AuthenticAMD"}[spec.iommu], name


@pytest.mark.skipif(not REALWORLD.is_dir(), reason=f"{REALWORLD} is not on this machine")
def test_packaged_sources_are_verbatim_copies_of_the_shared_fixtures():
    packaged = Path(realworld.DATA)
    files = [path for path in packaged.rglob("*") if path.is_file() and path.name != "README"]
    assert len(files) >= 30
    for path in files:
        assert filecmp.cmp(path, REALWORLD / path.relative_to(packaged), shallow=False), path
