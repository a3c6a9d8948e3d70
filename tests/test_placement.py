"""Where each device sits (issue 13, part 5): behind a CPU root port or the chipset, its link against
the best both ends can do, its NUMA node and the node a VM is pinned to, on real machines.

The multi-node machines are hwloc's captures of real servers (their sysfs PCI trees and
``sys/devices/system/node``); the Threadripper is sirspudd's published X399 listing, whose
post says where the Radeon VII sits and which CPUs and node its VM was pinned to.
"""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path

import pytest

from passthrough.capture.run import capture
from passthrough.host import HostTree
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.model import Bar, Inventory
from passthrough.pci.scan import scan
from passthrough.topology.placement import cpulist_text, numa_choice, parse_cpulist, placement, placements
from tests.realworld_support import HWLOC, READ_BY_SCAN, REALWORLD, inventory, scratch

needs_hwloc = pytest.mark.skipif(not HWLOC.is_dir(), reason=f"hwloc's captures are not at {HWLOC}")

# Two Xeon E5-2680 (nodes 0-7 / 8-15): a Xeon Phi 83:00.0 and a ConnectX-3 82:00.0 on node 1,
# an ASPEED VGA behind the chipset's 00:1c.0, an NVMe 00:02.0 whose firmware gives no node.
XEON_PHI = "32em64t-2n8c+dax+nvme+mic+dimms"
# Two Xeon Silver 4108 (0-7,16-23 / 8-15,24-31): eight NEC Vector Engines with 64 GiB BARs behind
# PLX switches, and an X722 (60:00.0) whose link trained at 2.5 of 8 GT/s. All on node 0.
VECTOR_ENGINES = "32intel64-2p8co2t+8ve"
# Four Xeon E7-4870 with interleaved node CPU lists, ICH10; a QLogic HCA 43:00.0 on node 2.
FOUR_NODES = "40intel64-2g2n4c+pcilocality"


@functools.cache
def hwloc_host(name: str) -> Path:
    """A capture unpacked with what the scan reads, NUMA nodes included."""
    destination = scratch(f"placement-{name}")
    with tarfile.open(HWLOC / f"{name}.tar.bz2") as archive:
        members = [m for m in archive.getmembers() if _wanted(m.name.partition("/")[2])]
        archive.extractall(destination, members=members, filter="data")
    (root,) = [entry for entry in destination.iterdir() if entry.is_dir()]
    return root


def _wanted(path: str) -> bool:
    # A node's directory holds a link per memory block (thousands); its cpulist is what the scan
    # reads, meminfo and distance stay to show that a capture leaves them out.
    if path.startswith("sys/devices/system/node/"):
        return path.count("/") == 4 or path.rsplit("/", 1)[1] in ("cpulist", "meminfo", "distance")
    return path.startswith(READ_BY_SCAN)


@functools.cache
def hwloc_inventory(name: str) -> Inventory:
    return scan(hwloc_host(name))


# -- the scan: node CPU lists and BARs ---------------------------------------------------------


@needs_hwloc
def test_the_scan_reads_each_node_cpu_list_as_the_kernel_wrote_it():
    assert hwloc_inventory(XEON_PHI).numa_nodes == {0: "0-7", 1: "8-15"}
    assert hwloc_inventory(VECTOR_ENGINES).numa_nodes == {0: "0-7,16-23", 1: "8-15,24-31"}
    four = hwloc_inventory(FOUR_NODES).numa_nodes
    assert list(four) == [0, 1, 2, 3] and four[2] == "2,6,10,14,18,22,26,30,34,38"


@needs_hwloc
def test_the_scan_records_the_bars_and_the_inventory_json_keeps_them_and_the_nodes():
    inventory = hwloc_inventory(VECTOR_ENGINES)
    engine = inventory.require("0000:1d:00.0")
    assert engine.bars is not None and engine.bars[0] == Bar(0, 64 << 30, True, True)
    again = Inventory.from_json(inventory.to_json())
    assert again.require("0000:1d:00.0").bars == engine.bars
    assert again.numa_nodes == inventory.numa_nodes
    # A snapshot stored before these fields existed reads as "not read", never as "none".
    old = inventory.to_json()
    del old["numa_nodes"]
    for device in old["devices"]:
        del device["bars"]
    older = Inventory.from_json(old)
    assert older.numa_nodes == {} and older.require("0000:1d:00.0").bars is None


def test_a_host_tree_without_node_directories_has_no_nodes(make_tree):
    inventory = scan(make_tree(HostSpec(functions=[FunctionSpec("01:00.0", "10de", "1b06", "030000", iommu_group=1)])))
    assert inventory.numa_nodes == {}
    assert numa_choice(inventory, ["0000:01:00.0"]).node is None


# -- CPU root port or chipset -------------------------------------------------------------------


@needs_hwloc
def test_the_xeon_phi_sits_behind_a_cpu_root_port_and_the_aspeed_vga_behind_the_chipset():
    inventory = hwloc_inventory(XEON_PHI)
    phi = placement(inventory, "0000:83:00.0")
    assert phi.root_port == "0000:80:03.0" and phi.attachment is not None and phi.attachment.where == "cpu"
    assert phi.words[0].startswith("Behind a CPU root port, 80:03.0 (a guess:")
    vga = placement(inventory, "0000:05:00.0")  # behind the AST1150 bridge 04:00.0, under 00:1c.0
    assert vga.root_port == "0000:00:1c.0" and vga.attachment is not None and vga.attachment.where == "chipset"
    assert "shares its one uplink to the CPU" in vga.words[0]


@needs_hwloc
def test_the_matrox_behind_the_ich10_pci_bridge_is_behind_the_chipset():
    found = placement(hwloc_inventory(FOUR_NODES), "0000:09:03.0")
    assert found.root_port == "0000:00:1e.0"
    assert found.attachment is not None and found.attachment.where == "chipset"
    assert "bridge to conventional PCI" in found.attachment.reason


def test_on_sirspudds_threadripper_the_radeon_vii_is_on_the_cpu_and_the_wifi_behind_the_x399_chipset():
    threadripper = inventory("sirspudd-threadripper")
    gpu = placement(threadripper, "0000:0d:00.0")  # behind its own ATI switch 0b/0c, under GPP bridge 00:03.1
    assert gpu.root_port == "0000:00:03.1" and gpu.attachment is not None and gpu.attachment.where == "cpu"
    wifi = placement(threadripper, "0000:03:00.0")  # QCA6174 on a "300 Series Chipset PCIe Port"
    assert wifi.root_port == "0000:00:01.1" and wifi.attachment is not None and wifi.attachment.where == "chipset"
    root_bus = placement(threadripper, "0000:00:14.0")
    assert root_bus.root_port is None and root_bus.words[0].startswith("On a root bus itself")


def test_placements_cover_endpoints_only():
    threadripper = inventory("sirspudd-threadripper")
    listed = {found.address for found in placements(threadripper)}
    assert "0000:0d:00.0" in listed and "0000:00:03.1" not in listed and "0000:00:18.0" not in listed


# -- the link against its best ------------------------------------------------------------------


@needs_hwloc
def test_the_x722_trained_at_2_5_of_8_gt_s_is_said_to_run_below_its_best_and_the_engines_are_not():
    inventory = hwloc_inventory(VECTOR_ENGINES)
    nic = placement(inventory, "0000:60:00.0")
    assert nic.downgraded and nic.link_of == "0000:60:00.0"
    assert "Its link runs at 2.5 GT/s of the 8.0 GT/s both ends can do" in nic.words[1]
    assert "lower the speed while idle" in nic.words[1]
    engine = placement(inventory, "0000:1d:00.0")
    assert not engine.downgraded and engine.words[1] == "Link 8 GT/s x16, as fast and as wide as both ends can do."


@needs_hwloc
def test_a_link_whose_maximum_is_not_reported_is_not_called_full():
    hca = placement(hwloc_inventory(FOUR_NODES), "0000:43:00.0")  # old kernel: no max_link_speed, width
    assert not hca.downgraded
    assert hca.words[1] == "Link 8 GT/s x4; its maximum is not reported, so whether it could run faster is not known."


def _card_behind_a_switch(link_up: tuple[str, int, str, int], gpu_link: tuple[str, int, str, int]) -> HostSpec:
    return HostSpec(
        functions=[
            FunctionSpec("00:01.1", "1022", "1483", "060400", driver="pcieport", iommu_group=1,
                         link=("16.0 GT/s PCIe", 16, "16.0 GT/s PCIe", 16)),
            FunctionSpec("01:00.0", "1002", "1478", "060400", driver="pcieport", iommu_group=2, parent="00:01.1",
                         link=link_up),
            FunctionSpec("02:00.0", "1002", "1479", "060400", driver="pcieport", iommu_group=3, parent="01:00.0",
                         link=("16.0 GT/s PCIe", 16, "16.0 GT/s PCIe", 16)),
            FunctionSpec("03:00.0", "1002", "73bf", "030000", driver="amdgpu", iommu_group=4, parent="02:00.0",
                         link=gpu_link),
        ]
    )  # fmt: skip


def test_a_card_whose_own_switch_trained_narrow_names_that_link(make_tree):
    # Navi cards sit behind a switch of their own; the GPU's link to it is internal and looks full.
    spec = _card_behind_a_switch(
        ("16.0 GT/s PCIe", 4, "16.0 GT/s PCIe", 16), ("16.0 GT/s PCIe", 16, "16.0 GT/s PCIe", 16)
    )
    found = placement(scan(make_tree(spec)), "0000:03:00.0")
    assert found.downgraded and found.link_of == "0000:01:00.0"
    assert found.words[1].startswith("The link of 01:00.0 above it")
    assert "is downgraded to x4 of the x16 both ends can do" in found.words[1]


def test_a_card_faster_than_its_slot_is_limited_by_the_slot_not_downgraded(make_tree):
    spec = HostSpec(
        functions=[
            FunctionSpec("00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=1,
                         link=("8.0 GT/s PCIe", 16, "8.0 GT/s PCIe", 16)),
            FunctionSpec("01:00.0", "10de", "2204", "030000", driver="nvidia", iommu_group=2, parent="00:01.0",
                         link=("8.0 GT/s PCIe", 16, "16.0 GT/s PCIe", 16)),
        ]
    )  # fmt: skip
    found = placement(scan(make_tree(spec)), "0000:01:00.0")
    assert not found.downgraded
    assert "could do 16.0 GT/s x16, but the port above it at most 8.0 GT/s x16: the slot limits it" in found.words[1]


def test_a_link_narrower_and_slower_than_both_ends_says_both(make_tree):
    spec = _card_behind_a_switch(
        ("16.0 GT/s PCIe", 16, "16.0 GT/s PCIe", 16), ("2.5 GT/s PCIe", 8, "16.0 GT/s PCIe", 16)
    )
    found = placement(scan(make_tree(spec)), "0000:03:00.0")
    assert found.downgraded and found.link_of == "0000:03:00.0"
    assert "Its link is downgraded to x8 of the x16" in found.words[1]
    assert "It also runs at 2.5 GT/s of the 16.0 GT/s both ends can do" in found.words[1]
    assert found.to_json()["link"] == {"speed": "2.5 GT/s", "width": 8, "max_speed": "16.0 GT/s", "max_width": 16}


# -- NUMA: the node and the node a VM is pinned to ------------------------------------------------


@needs_hwloc
def test_a_device_on_node_1_of_two_is_pinned_there_with_that_nodes_cpus():
    inventory = hwloc_inventory(XEON_PHI)
    phi = placement(inventory, "0000:83:00.0")
    assert (phi.numa_node, phi.node_cpus) == (1, "8-15")
    assert phi.words[2].startswith("NUMA node 1 of 2 (CPUs 8-15): the generated configs pin")
    choice = numa_choice(inventory, ["0000:83:00.0", "0000:82:00.0"])
    assert (choice.node, choice.cpus) == (1, "8-15")
    assert choice.why == "83:00.0, 82:00.0 sit on NUMA node 1 of 2 (CPUs 8-15)."


@needs_hwloc
def test_interleaved_node_cpus_are_kept_exactly():
    choice = numa_choice(hwloc_inventory(FOUR_NODES), ["0000:43:00.0"])
    assert (choice.node, choice.cpus) == (2, "2,6,10,14,18,22,26,30,34,38")


@needs_hwloc
def test_devices_on_two_nodes_or_on_none_are_not_pinned_and_it_is_said_why():
    inventory = hwloc_inventory(XEON_PHI)
    split = numa_choice(inventory, ["0000:83:00.0", "0000:05:00.0"])
    assert split.node is None
    assert split.why.startswith("The devices sit on different NUMA nodes (node 0: 05:00.0; node 1: 83:00.0)")
    nowhere = numa_choice(inventory, ["0000:00:02.0"])  # the NVMe's numa_node is -1
    assert nowhere.node is None and "gives no NUMA node for 00:02.0 on a host with 2 nodes" in nowhere.why
    assert placement(inventory, "0000:00:02.0").words[2].startswith("The firmware gives no NUMA node for it")
    # One device with a node and one without: the node of the one that has it, and the other named.
    mixed = numa_choice(inventory, ["0000:83:00.0", "0000:00:02.0"])
    assert mixed.node == 1 and mixed.why.endswith("; 00:02.0 reports no node.")


def test_the_threadripper_gpu_gets_the_node_and_cpus_its_owner_pinned_by_hand(make_tree):
    """sirspudd: "my GPU 0d:00:00 is on numa node 0; therefore my memory needs to be allocated here", and the
    VM's XML pins its vCPUs to 4-7,20-23 with <memory mode='preferred' nodeset='0'/>.

    The listing gives no numa_node; the post's node 0 for 0d:00.0 is set from its words, 43:00.0 on the second
    die's node 1 and the 1950X's node CPU lists (0-7,16-23 / 8-15,24-31) are this test's assumption.
    """
    from passthrough.hosttrees import realworld

    spec = realworld.sirspudd_threadripper()
    for function in spec.functions:
        function.numa_node = 0 if function.address < "0000:40" else 1
    spec.files.update(
        {
            "sys/devices/system/node/node0/cpulist": "0-7,16-23\n",
            "sys/devices/system/node/node1/cpulist": "8-15,24-31\n",
        }
    )
    threadripper = scan(make_tree(spec))
    choice = numa_choice(threadripper, ["0000:0d:00.0", "0000:0d:00.1"])
    assert choice.node == 0  # the post's nodeset='0'
    owner_pinned = parse_cpulist("4-7,20-23")  # from the post's <vcpu cpuset='4-7,20-23'>
    assert set(owner_pinned) <= set(parse_cpulist(choice.cpus or ""))
    assert numa_choice(threadripper, ["0000:43:00.0"]).node == 1


# -- CPU lists ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus", "short"),
    [
        ("0-7,16-23", [*range(8), *range(16, 24)], "0-7,16-23"),
        ("3", [3], "3"),
        ("0,4,8,12", [0, 4, 8, 12], "0,4,8,12"),
        (" 0-3,2-5\n", [0, 1, 2, 3, 4, 5], "0-5"),
    ],
)
def test_cpu_lists_read_and_write_the_kernels_short_form(text, cpus, short):
    assert parse_cpulist(text) == cpus
    assert cpulist_text(cpus) == short


@pytest.mark.parametrize("junk", ["", "a-b", "3-1", "1,,2", "0-", "-3", "1;2", "0-70000", "1\n2"])
def test_anything_else_is_not_a_cpu_list(junk):
    with pytest.raises(ValueError, match="is not a CPU list"):
        parse_cpulist(junk)


def test_a_node_whose_cpu_list_is_not_one_is_not_pinned(make_tree):
    spec = HostSpec(
        functions=[FunctionSpec("01:00.0", "10de", "1b06", "030000", iommu_group=1, numa_node=1)],
        files={"sys/devices/system/node/node0/cpulist": "0-3\n", "sys/devices/system/node/node1/cpulist": "4-x\n"},
    )
    host = scan(make_tree(spec))
    choice = numa_choice(host, ["0000:01:00.0"])
    assert choice.node is None and choice.why == "NUMA node 1 lists no usable CPUs: not pinned."
    found = placement(host, "0000:01:00.0")
    assert found.node_cpus is None and "whose CPU list cannot be read" in found.words[2]


# -- capture -----------------------------------------------------------------------------------


@needs_hwloc
def test_a_capture_records_each_nodes_cpu_list_and_nothing_else_of_the_node(tmp_path):
    source = hwloc_host(FOUR_NODES)
    assert (source / "sys/devices/system/node/node2/meminfo").is_file()  # in the source, left out below
    capture(HostTree(str(source)), tmp_path / "captured")
    node = tmp_path / "captured/sys/devices/system/node/node2"
    assert sorted(path.name for path in node.iterdir()) == ["cpulist"]
    assert scan(tmp_path / "captured").numa_nodes == hwloc_inventory(FOUR_NODES).numa_nodes


def test_the_threadripper_source_is_the_one_quoted():
    post = (REALWORLD / "sirspudd-threadripper-1950x/extracted/post.block7.txt").read_text()
    assert "<vcpu placement='static' cpuset='4-7,20-23'>8</vcpu>" in post
    assert "<memory mode='preferred' nodeset='0'/>" in post
