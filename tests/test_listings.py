"""Listings as people paste them: every format of the real-world sources, and the topology behind them."""

import shutil
import subprocess

import pytest

from passthrough.errors import ListingError
from passthrough.hosttrees import listings
from passthrough.hosttrees.listed import ListedFunction
from passthrough.hosttrees.tree import write_tree
from tests.realworld_support import needs_shared_fixtures, source

pytestmark = needs_shared_fixtures

DUO_GROUPS = "asokolsky-homelab/extracted/duo__iommu.block1.txt"
DUO_LSPCI = "asokolsky-homelab/extracted/duo__lspci.block1.txt"
DELL_LSPCI = "asokolsky-homelab/extracted/dell__latitude-7490__lspci.block1.txt"
DELL_TREE = "asokolsky-homelab/extracted/dell__latitude-7490__lspci.block2.txt"
DELL_VERBOSE = "asokolsky-homelab/extracted/dell__latitude-7490__lspci.block3.txt"
ASHTONIAN = "ashtonian-kvm-aio/output.sh.txt"
NAUNTER = "naunter-device-passthrough-notes/extracted/ASRock-B550-Phantom-Gaming-ITX-ax__README.block1.txt"
ETHANZHF = "ethanzhf-iommu-tools/tree.sh.output.txt"
MISTIKAN = "mistikan-hl-cluster/extracted/docs__iommu.block1.txt"
SCHPLORG_GROUPS = "schplorg-vfio-t480/extracted/README.block5.txt"
SCHPLORG_VVV = "schplorg-vfio-t480/extracted/README.block6.txt"
MAPMANAGEMENT_ACS = "mapmanagement-gpu-passthrough/extracted/passthrough__pop_os__first_try.block3.txt"
MAPMANAGEMENT_DMESG = "mapmanagement-gpu-passthrough/extracted/problems.block2.txt"
SIRSPUDD = "sirspudd-threadripper-1950x/extracted/post.block4.txt"
ARC_LSPCI = "developer-onizuka-arc310/extracted/README.block3.txt"


def by_address(functions):
    return {function.address: function for function in functions}


# Group listings --------------------------------------------------------------------------
def test_arch_one_line_listing_reads_every_function_and_skips_the_prompt_and_cmdline():
    functions = listings.parse_arch_one_line(source(DUO_GROUPS))
    assert len(functions) == 21
    gpu = by_address(functions)["0000:01:00.0"]
    assert (gpu.iommu_group, gpu.class_code, gpu.vendor_id, gpu.device_id, gpu.revision) == (
        2,
        "0300",
        "10de",
        "1d01",
        "a1",
    )
    assert gpu.class_name == "VGA compatible controller"
    assert gpu.name == "NVIDIA Corporation GP108 [GeForce GT 1030]"
    assert [f.address for f in functions if f.iommu_group == 10] == [
        "0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3", "0000:00:1f.4"
    ]  # fmt: skip


def test_a_function_without_rev_has_no_revision_in_the_listing():
    functions = by_address(listings.parse_arch_one_line(source(DUO_GROUPS)))
    assert functions["0000:00:02.0"].revision is None


def test_arch_grouped_listing_without_domain():
    functions = by_address(listings.parse_arch_grouped(source(ASHTONIAN)))
    assert len(functions) == 43
    assert functions["0000:03:00.0"].iommu_group == 21
    assert functions["0000:03:00.1"].iommu_group == 22
    assert {functions["0000:04:00.0"].iommu_group, functions["0000:04:00.1"].iommu_group} == {23}
    # the lspci -nnk and lsgroup.sh outputs further down are not part of the group listing
    assert functions["0000:04:00.0"].driver is None


def test_arch_grouped_listing_with_full_domain_addresses():
    functions = by_address(listings.parse_arch_grouped(source(NAUNTER)))
    assert len(functions) == 28
    assert functions["0000:05:00.0"].iommu_group == 14 and functions["0000:05:00.1"].iommu_group == 15
    assert [a for a, f in functions.items() if f.iommu_group == 6] == [f"0000:00:18.{n}" for n in range(8)]


def test_dmar_tree_keeps_each_function_once_with_its_unit():
    functions = listings.parse_dmar_tree(source(ETHANZHF))
    assert source(ETHANZHF).count("Group Device:") == 617  # groups repeat once per member
    assert len(functions) == 483
    assert len({f.iommu_unit for f in functions}) == 20
    found = by_address(functions)
    assert (found["0000:6b:00.0"].iommu_unit, found["0000:6b:00.0"].iommu_group) == ("dmar15", 18)
    assert [f.address for f in functions if f.iommu_group == 57] == ["0000:00:14.0", "0000:00:14.2"]


def test_iommu_sh_reads_reset_flags_and_continuation_lines_and_skips_usb():
    functions = by_address(listings.parse_iommu_sh(source(MISTIKAN)))
    assert len(functions) == 20
    assert functions["0000:00:14.2"].iommu_group == 3  # a continuation line under group 3
    assert [a for a, f in functions.items() if f.iommu_group == 9] == [
        "0000:00:1f.0", "0000:00:1f.3", "0000:00:1f.4", "0000:00:1f.5"
    ]  # fmt: skip
    assert functions["0000:03:00.0"].has_reset is True
    assert functions["0000:03:00.1"].has_reset is False
    assert not any(f.vendor_id == "1d6b" for f in functions.values())  # USB hubs are not PCI functions


def test_iommu_sh_class_names_map_back_to_class_codes():
    functions = by_address(listings.parse_iommu_sh(source(MISTIKAN)))
    codes = {a[5:]: f.class_code for a, f in functions.items()}
    assert codes["00:00.0"] == "0600"
    assert codes["01:00.0"] == "0604"
    assert codes["03:00.0"] == "0300"
    assert codes["04:00.0"] == "0108"  # Non-Volatile memory controller
    assert codes["00:1f.5"] == "0c80"  # "Serial bus controller" names both 0c and 0c80; lspci prints 0c80's
    assert functions["0000:03:00.0"].name == "Navi 33 [Radeon RX 7700S/7600/7600S/7600M XT/PRO W7600]"


@pytest.mark.parametrize(
    ("path", "count"),
    [(DUO_GROUPS, 21), (ASHTONIAN, 43), (NAUNTER, 28), (ETHANZHF, 483), (MISTIKAN, 20), (DELL_VERBOSE, 21)],
)
def test_parse_groups_recognises_each_format(path, count):
    assert len(listings.parse_groups(source(path))) == count


def test_text_without_a_group_listing_is_a_clear_error():
    with pytest.raises(ListingError, match="No IOMMU group listing"):
        listings.parse_groups(source(DUO_LSPCI))


def test_a_group_line_that_is_not_an_lspci_line_names_the_line():
    with pytest.raises(ListingError, match=r"Line 2 .*'IOMMU Group 3 is missing'"):
        listings.parse_arch_one_line(
            "IOMMU Group 1 00:02.0 VGA compatible controller [0300]: X [8086:3e92]\nIOMMU Group 3 is missing"
        )


def test_a_function_in_two_groups_is_rejected():
    text = "IOMMU Group 1 00:02.0 VGA compatible controller [0300]: X [8086:3e92]\nIOMMU Group 4 00:02.0 VGA compatible controller [0300]: X [8086:3e92]"
    with pytest.raises(ListingError, match="in group 1 .* and in group 4"):
        listings.parse_arch_one_line(text)


# lspci ---------------------------------------------------------------------------------------
def test_lspci_nnkq_gives_subsystem_driver_and_modules():
    functions = by_address(listings.parse_lspci(source(DUO_LSPCI)))
    assert len(functions) == 20
    nic = functions["0000:03:00.0"]
    assert (nic.subsystem_vendor_id, nic.subsystem_device_id, nic.driver, nic.modules) == (
        "1849",
        "1539",
        "igb",
        ["igb"],
    )
    assert functions["0000:00:1f.0"].driver is None  # no "Kernel driver in use" line
    assert functions["0000:01:00.0"].ids == ("10de", "2584")  # the RTX 3050 that replaced the GT 1030


def test_lspci_v_without_ids_reads_groups_from_flags_and_class_codes_from_names():
    functions = by_address(listings.parse_lspci(source(DELL_VERBOSE)))
    assert functions["0000:00:14.0"].iommu_group == 2
    assert (functions["0000:00:14.0"].class_code, functions["0000:00:14.0"].prog_if) == ("0c03", "30")
    assert functions["0000:00:14.0"].ids is None
    assert functions["0000:01:00.0"].class_code == "ff00"  # "Unassigned class [ff00]"
    assert functions["0000:00:02.0"].iommu_group is None and functions["0000:00:02.0"].driver == "i915"


def test_lspci_vvv_gives_the_bridges_secondary_buses():
    functions = by_address(listings.parse_lspci(source(SCHPLORG_VVV)))
    secondary = {address[5:]: f.secondary_bus for address, f in functions.items()}
    assert secondary == {"04:00.0": 0x05, "05:00.0": 0x06, "05:01.0": 0x07, "05:02.0": 0x3C, "06:00.0": None}
    assert functions["0000:06:00.0"].driver == "thunderbolt"


def test_lspci_tree_gives_each_functions_bridge():
    nodes = {node.address: node for node in listings.parse_lspci_tree(source(DELL_TREE))}
    assert len(nodes) == 22
    assert nodes["0000:01:00.0"].parent == "0000:00:1c.0"
    assert nodes["0000:03:00.0"].parent == "0000:00:1d.0"
    assert nodes["0000:00:1d.0"].secondary_bus == 0x03 and nodes["0000:00:1d.0"].parent is None
    assert nodes["0000:00:1f.6"].name == "Intel Corporation Ethernet Connection (4) I219-LM"


def test_lspci_tree_with_nested_switches_and_two_root_buses():
    text = (
        "-+-[0000:40]-+-00.0  Host\n"
        " |           \\-01.1-[41-43]----00.0-[42-43]--+-00.0-[43]--+-00.0  GPU\n"
        " |                                           |            \\-00.1  Audio\n"
        " |                                           \\-01.0-[44]--\n"
        " \\-[0000:00]-+-00.0  Host\n"
        "             \\-1d.0-[01]----00.0  NVMe\n"
    )
    parents = {node.address: node.parent for node in listings.parse_lspci_tree(text)}
    assert parents == {
        "0000:40:00.0": None, "0000:40:01.1": None, "0000:41:00.0": "0000:40:01.1", "0000:42:00.0": "0000:41:00.0",
        "0000:43:00.0": "0000:42:00.0", "0000:43:00.1": "0000:42:00.0", "0000:42:01.0": "0000:41:00.0",
        "0000:00:00.0": None, "0000:00:1d.0": None, "0000:01:00.0": "0000:00:1d.0",
    }  # fmt: skip


# Topology -----------------------------------------------------------------------------------
def test_inferred_topology_of_the_latitude_matches_its_lspci_tree():
    functions = listings.parse_lspci(source(DELL_LSPCI))
    truth = {node.address: node.parent for node in listings.parse_lspci_tree(source(DELL_TREE))}
    assert listings.infer_topology(functions).parents == truth


def test_inferred_bus_numbers_of_the_thunderbolt_path_match_lspci_vvv():
    groups = listings.parse_groups(source(SCHPLORG_GROUPS))
    inferred = listings.infer_topology(groups).secondary_buses
    assert inferred["0000:04:00.0"] == 0x05
    assert inferred["0000:05:00.0"] == 0x06
    assert inferred["0000:05:01.0"] == 0x07  # the port the eGPU enclosure is plugged into
    # 05:02.0's bus is empty and reserved past the hotplug range: depth-first cannot know it
    assert inferred["0000:05:02.0"] != 0x3C


def test_secondary_buses_from_lspci_vvv_win_over_the_inference():
    merged = listings.merge_lspci(
        listings.parse_groups(source(SCHPLORG_GROUPS)), listings.parse_lspci(source(SCHPLORG_VVV))
    )
    topology = listings.infer_topology(merged)
    assert topology.secondary_buses["0000:05:02.0"] == 0x3C
    assert topology.parents["0000:09:00.0"] == "0000:08:01.0"
    assert topology.parents["0000:0a:00.0"] == "0000:08:04.0"
    assert topology.parents["0000:07:00.0"] == "0000:05:01.0"


def test_explicit_bus_parents_override_the_inference():
    groups = listings.parse_groups(source(SCHPLORG_GROUPS))
    topology = listings.infer_topology(groups, {0x04: "00:1d.0", 0x03: "00:1c.6"})
    assert topology.parents["0000:04:00.0"] == "0000:00:1d.0"
    assert topology.parents["0000:03:00.0"] == "0000:00:1c.6"


def test_the_chipset_of_the_b550_hangs_where_its_kernel_log_says():
    # problems.block2: input: ... /devices/pci0000:00/0000:00:01.2/0000:02:00.0/usb1/...
    assert "/devices/pci0000:00/0000:00:01.2/0000:02:00.0/usb1" in source(MAPMANAGEMENT_DMESG)
    topology = listings.infer_topology(listings.parse_groups(source(MAPMANAGEMENT_ACS)))
    assert topology.parents["0000:02:00.0"] == "0000:00:01.2"


def test_every_host_bridge_bus_is_a_root_bus_as_on_a_two_die_threadripper():
    topology = listings.infer_topology(listings.parse_groups(source(SIRSPUDD)))
    assert topology.root_buses == [(0, 0x00), (0, 0x40)]
    assert topology.parents["0000:40:01.3"] is None
    assert topology.parents["0000:43:00.0"] == "0000:40:01.3"
    assert topology.parents["0000:0d:00.0"] == "0000:0c:00.0"


def test_unreachable_buses_become_root_buses_on_the_many_stack_server():
    topology = listings.infer_topology(listings.parse_dmar_tree(source(ETHANZHF)))
    roots = {bus for _, bus in topology.root_buses}
    assert topology.parents["0000:03:00.0"] == "0000:02:00.0"  # the BMC's VGA behind the AST1150 bridge
    assert {0x00, 0x15, 0x6B, 0x7E, 0xFE, 0xFF} <= roots
    assert 0x01 not in roots and 0x03 not in roots


def test_a_left_over_bus_hangs_under_the_latest_bridge_with_an_empty_bus():
    # ashtonian: the Thunderbolt USB controller 41:00.0 sits past a hotplug reservation.
    merged = listings.parse_groups(source(ASHTONIAN))
    topology = listings.infer_topology(merged)
    assert topology.parents["0000:41:00.0"] == "0000:00:1d.0"
    assert topology.secondary_buses["0000:00:1d.0"] == 0x41
    assert topology.root_buses == [(0, 0)]


def test_bus_parents_naming_a_function_that_is_not_a_bridge_is_an_error():
    groups = listings.parse_groups(source(SCHPLORG_GROUPS))
    with pytest.raises(ListingError, match="bus 04 to 00:1f.6"):
        listings.infer_topology(groups, {0x04: "00:1f.6"})


@pytest.mark.skipif(shutil.which("lspci") is None, reason="pciutils (lspci) is not installed")
@pytest.mark.parametrize("path", [SIRSPUDD, MAPMANAGEMENT_ACS, ASHTONIAN, SCHPLORG_GROUPS])
def test_lspci_draws_the_written_tree_as_it_was_inferred(path, tmp_path):
    groups = listings.parse_groups(source(path))
    write_tree(listings.build_host_spec(groups), tmp_path)
    result = subprocess.run(
        ["lspci", "-tv", "-A", "linux-sysfs", "-O", f"sysfs.path={tmp_path}/sys/bus/pci"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    drawn = {node.address: node.parent for node in listings.parse_lspci_tree(result.stdout)}
    assert drawn == listings.infer_topology(groups).parents


# Building a HostSpec -----------------------------------------------------------------------
def test_lspci_details_merge_only_where_the_ids_agree():
    spec = listings.build_host_spec(listings.parse_groups(source(DUO_GROUPS)), listings.parse_lspci(source(DUO_LSPCI)))
    assert spec.function("01:00.0").device == "1d01"  # the GT 1030 of the group listing
    assert spec.function("01:00.0").driver is None  # not the RTX 3050's nvidia
    assert spec.function("01:00.0").subsystem_vendor is None
    assert (spec.function("03:00.0").driver, spec.function("03:00.0").subsystem_vendor) == ("igb", "1849")
    assert spec.function("00:01.0").driver == "pcieport"


def test_functions_only_lspci_shows_are_added_without_a_group():
    spec = listings.build_host_spec(listings.parse_lspci(source(ARC_LSPCI)))
    assert [(f.address, f.driver, f.iommu_group) for f in spec.functions] == [
        ("0000:03:00.0", "vfio-pci", None), ("0000:04:00.0", "vfio-pci", None)
    ]  # fmt: skip


def test_the_boot_vga_is_marked_and_other_vga_functions_read_zero():
    spec = listings.build_host_spec(listings.parse_groups(source(DUO_GROUPS)), boot_vga="00:02.0")
    assert spec.function("00:02.0").boot_vga is True
    assert spec.function("01:00.0").boot_vga is False
    assert spec.function("01:00.1").boot_vga is None  # the kernel writes boot_vga for VGA functions only
    unknown = listings.build_host_spec(listings.parse_groups(source(DUO_GROUPS)))
    assert unknown.function("00:02.0").boot_vga is None


def test_a_listing_without_ids_cannot_become_a_host():
    with pytest.raises(ListingError, match="0000:00:00.0 .* no \\[vendor:device\\] ids"):
        listings.build_host_spec(listings.parse_lspci(source(DELL_LSPCI)))


def test_a_boot_vga_that_is_not_listed_is_an_error():
    with pytest.raises(ListingError, match="boot_vga 0000:09:00.0"):
        listings.build_host_spec(listings.parse_groups(source(DUO_GROUPS)), boot_vga="0000:09:00.0")


def test_listed_units_become_the_trees_iommu_units():
    spec = listings.build_host_spec(listings.parse_dmar_tree(source(ETHANZHF)))
    assert len(spec.iommu_units) == 20
    assert "0000:6b:00.0" in spec.iommu_units["dmar15"]


def test_prog_if_from_lspci_v_reaches_the_class_code():
    function = ListedFunction("0000:00:14.0", "0c03", prog_if="30", vendor_id="8086", device_id="9d2f")
    assert listings.build_host_spec([function]).function("00:14.0").class_code == "0c0330"


def test_two_lspci_outputs_of_one_host_complete_each_other():
    both = source(DELL_LSPCI) + source(DELL_VERBOSE)
    functions = by_address(listings.parse_lspci(both))
    assert len(functions) == 22
    assert (functions["0000:00:14.0"].iommu_group, functions["0000:00:14.0"].prog_if) == (2, "30")


def test_a_fault_in_one_format_does_not_hide_a_listing_in_another():
    text = source(NAUNTER) + "\nIOMMU Group 99 not a device line\n"
    assert len(listings.parse_groups(text)) == 28
    broken = "IOMMU Group 1 00:02.0 VGA compatible controller [0300]: X [8086:3e92]\nIOMMU Group 3 is missing\n"
    with pytest.raises(ListingError, match="Line 2 of the group listing"):
        listings.parse_groups(broken)  # no format reads it, so the fault is what the user needs
