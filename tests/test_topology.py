"""The topology picture: every function under its bridge, each group told apart, the driver,
link, NUMA node and CPU-or-chipset guess beside it, on real machines and at 1,024 functions."""

import xml.etree.ElementTree as ET

import pytest

from bench.synthetic import GEN4, build_synthetic_host
from passthrough.hosttrees import realworld
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.tree import write_tree
from passthrough.pci.scan import scan
from passthrough.topology import PALETTE, build_rows, group_colors, render_svg
from passthrough.topology.legend import LEGEND_MAX_GROUPS

SVG = "{http://www.w3.org/2000/svg}"


def _host() -> HostSpec:
    return HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "1022", "1483", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec(
                "0000:01:00.0",
                "10de",
                "1d01",
                "030000",
                driver="vfio-pci",
                iommu_group=2,
                parent="0000:00:01.0",
                link=("2.5 GT/s PCIe", 4, "8.0 GT/s PCIe", 16),
                numa_node=1,
            ),  # fmt: skip
            FunctionSpec(
                "0000:01:00.1", "10de", "0fb8", "040300", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0"
            ),
            FunctionSpec(
                "0000:00:02.0",
                "8086",
                "159b",
                "020000",
                driver="ice",
                iommu_group=3,
                sriov_totalvfs=8,
                sriov_numvfs=2,
                link=GEN4,
                numa_node=0,
            ),  # fmt: skip
            FunctionSpec("0000:00:02.1", "8086", "1889", "020000", driver="iavf", iommu_group=4, physfn="0000:00:02.0"),
            FunctionSpec("0000:00:02.2", "8086", "1889", "020000", driver="iavf", iommu_group=5, physfn="0000:00:02.0"),
            FunctionSpec("0000:40:00.0", "1022", "1450", "060000", iommu_group=6),
        ],
        net_devices={"eno1": "0000:00:02.0"},
        default_route="eno1",
    )


def _machine(name: str, tmp_path):
    return scan(write_tree(realworld.MACHINES[name](), tmp_path / name))


def _rows_by_address(inventory):
    return {row.address: row for row in build_rows(inventory) if row.address}


def test_rows_follow_the_tree_with_functions_under_their_bridge(make_tree):
    rows = build_rows(scan(make_tree(_host())))
    titles = [(row.depth, row.title.split()[0]) for row in rows]
    assert titles == [
        (0, "Root"),
        (1, "00:01.0"),
        (2, "01:00.0"),
        (2, "01:00.1"),
        (1, "00:02.0"),
        (2, "2"),  # "2 virtual functions", folded under their PF
        (0, "Root"),
        (1, "40:00.0"),
    ]
    vfs = rows[5]
    assert vfs.kind == "vfs" and vfs.badge == "4–5" and vfs.driver == "iavf"


def test_host_critical_functions_are_marked_with_the_reason_in_their_tooltip(make_tree):
    inventory = scan(make_tree(_host()))
    rows = build_rows(inventory)
    assert [row.address for row in rows if row.critical] == ["0000:00:02.0"]
    svg = render_svg(inventory)
    assert svg.count('aria-label="host-critical"') == 1
    assert "host-critical: " + inventory.host_critical["0000:00:02.0"][0] in svg.replace("&#x27;", "'")


def test_svg_is_well_formed_and_links_each_function(make_tree):
    svg = render_svg(scan(make_tree(_host())), link="/devices/{address}/")
    root = ET.fromstring(svg)
    hrefs = [element.get("href") for element in root.iter(f"{SVG}a")]
    assert "/devices/0000:01:00.1/" in hrefs and len(hrefs) == 5  # VF folds and root complexes have no page


def test_the_driver_state_is_drawn_vfio_pci_host_driver_or_none(make_tree):
    inventory = scan(make_tree(_host()))
    rows = _rows_by_address(inventory)
    assert rows["0000:01:00.0"].driver_state == "vfio"
    assert rows["0000:00:02.0"].driver_state == "host" and rows["0000:00:02.0"].driver == "ice"
    assert rows["0000:40:00.0"].driver_state == "none" and rows["0000:40:00.0"].driver == "no driver"
    root = ET.fromstring(render_svg(inventory))
    vfio_rows = [g for g in root.iter(f"{SVG}g") if g.get("data-driver") == "vfio"]
    assert len(vfio_rows) == 2
    assert all(g.find(f"{SVG}rect[@class='pill vfio']") is not None for g in vfio_rows)


def test_a_link_below_its_maximum_is_marked_and_one_at_its_maximum_is_not(make_tree):
    inventory = scan(make_tree(_host()))
    rows = _rows_by_address(inventory)
    slow, full = rows["0000:01:00.0"].link, rows["0000:00:02.0"].link
    assert slow is not None and slow.below_max and slow.text == "2.5 GT/s x4" and slow.max_text == "8.0 GT/s x16"
    assert full is not None and not full.below_max and full.text == "16.0 GT/s x16"
    svg = render_svg(inventory)
    assert svg.count("▼ max 8.0 GT/s x16") == 1 and "Link now" in svg


def test_the_numa_node_is_shown_and_its_absence_said(make_tree, tmp_path):
    svg = render_svg(scan(make_tree(_host())))
    assert ">node 1<" in svg and ">node 0<" in svg and ">NUMA<" in svg
    e810 = render_svg(_machine("prometheus-e810", tmp_path))
    assert ">node 1<" in e810  # the fixture's numa_node
    duo = render_svg(_machine("asokolsky-duo", tmp_path))
    assert "NUMA node: none reported" in duo and ">NUMA<" not in duo
    assert "Link speed and width: not in this snapshot." in duo  # the listing shows no links


@pytest.mark.parametrize(
    ("machine", "cpu", "chipset"),
    [
        # Intel: the CPU's x16 port 00:01.0, the PCH's root ports at 00:1c.x and 00:1d.0.
        ("asokolsky-duo", ["0000:00:01.0"], ["0000:00:1c.0", "0000:00:1c.5", "0000:00:1c.6", "0000:00:1d.0"]),
        # Alder Lake: the RX 6700 XT's own switch (ATI ids) sits under the CPU's 00:01.0; PCH at 00:1a-00:1d.
        ("ashtonian-city17", ["0000:00:01.0", "0000:00:01.1", "0000:00:06.0"], ["0000:00:1a.0", "0000:00:1c.4"]),
        # X570: the chipset is "Matisse Switch Upstream" 1022:57ad under GPP bridge 00:01.2; the 1080 Ti is on the CPU.
        ("joe-p-x570", ["0000:00:01.1", "0000:00:03.1", "0000:00:03.2"], ["0000:00:01.2"]),
        # B550: "500 Series Chipset" under 00:01.2; the Vega card's own AMD-made bridges do not count.
        ("mapmanagement-b550", ["0000:00:01.1", "0000:00:03.1"], ["0000:00:01.2"]),
        # X399: the chipset hangs under 00:01.1 of the first die; the second die (40:) has none.
        ("sirspudd-threadripper", ["0000:00:01.3", "0000:40:01.1", "0000:40:03.1"], ["0000:00:01.1"]),
    ],
)
def test_root_ports_are_told_cpu_or_chipset_and_said_to_be_a_guess(tmp_path, machine, cpu, chipset):
    inventory = _machine(machine, tmp_path)
    rows = _rows_by_address(inventory)
    for address in cpu:
        assert rows[address].attachment is not None and rows[address].attachment.where == "cpu", address
    for address in chipset:
        assert rows[address].attachment is not None and rows[address].attachment.where == "chipset", address
    # What hangs below a root port carries its guess (the bar beside it), the root port alone has the tag.
    below = [row for row in build_rows(inventory) if row.depth > 1 and row.under is not None]
    assert below and all(row.attachment is None for row in below)
    svg = render_svg(inventory)
    assert "behind the chipset (guess)" in svg and "CPU root port (guess)" in svg
    assert "Both guessed from addresses and ids; the kernel does not say." in svg


def test_the_gpu_behind_a_chipset_is_drawn_behind_it(tmp_path):
    rows = _rows_by_address(_machine("mapmanagement-b550", tmp_path))
    host_gpu, guest_gpu = rows["0000:04:00.0"], rows["0000:08:00.0"]  # RX 550 in the chipset, Vega on the CPU
    assert host_gpu.under is not None and host_gpu.under.where == "chipset"
    assert "500 Series Chipset" in host_gpu.under.reason
    assert guest_gpu.under is not None and guest_gpu.under.where == "cpu"


def test_an_lpc_bridge_below_a_root_port_means_chipset_whatever_the_vendor_and_unknown_vendors_are_not_guessed(
    make_tree,
):
    spec = HostSpec(
        functions=[
            FunctionSpec("0000:00:1e.0", "1b36", "000c", "060400", driver="pcieport", iommu_group=1, secondary_bus=1),
            FunctionSpec("0000:01:00.0", "8086", "2918", "060100", iommu_group=1, parent="0000:00:1e.0"),
            FunctionSpec("0000:00:02.0", "1b36", "000c", "060400", driver="pcieport", iommu_group=2, secondary_bus=2),
            FunctionSpec("0000:02:00.0", "1af4", "1041", "020000", driver="virtio-pci", iommu_group=2, parent="0000:00:02.0"),
        ]
    )  # fmt: skip
    rows = _rows_by_address(scan(make_tree(spec)))
    lpc_port = rows["0000:00:1e.0"].attachment
    assert lpc_port is not None and lpc_port.where == "chipset" and "LPC/ISA bridge 01:00.0" in lpc_port.reason
    assert rows["0000:00:02.0"].attachment is None  # QEMU's root port: nothing to go on


def test_a_host_with_few_groups_has_one_color_per_group_and_a_legend_entry_for_each(tmp_path):
    inventory = _machine("asokolsky-duo", tmp_path)
    colors = group_colors(build_rows(inventory))
    assert sorted(colors) == sorted(group.id for group in inventory.groups)
    assert len(set(colors.values())) == len(colors) == 15
    root = ET.fromstring(render_svg(inventory))
    texts = [element.text for element in root.iter(f"{SVG}text")]
    for group in inventory.groups:
        assert texts.count(str(group.id)) >= 2, group.id  # its legend entry and its rows' badges
    assert "GP108 [GeForce GT 1030] +1" in "".join(root.itertext())


@pytest.mark.parametrize("machine", sorted(realworld.MACHINES))
def test_groups_drawn_near_each_other_never_share_a_color(tmp_path, machine):
    rows = build_rows(_machine(machine, tmp_path))
    colors = group_colors(rows)
    grouped = [(index, row.group) for index, row in enumerate(rows) if row.group is not None]
    for position, (index, group) in enumerate(grouped):
        for other_index, other in grouped[position + 1 :]:
            if other_index - index >= len(PALETTE):
                break
            assert other == group or colors[other] != colors[group], (rows[index].title, rows[other_index].title)


def test_names_are_escaped_and_control_characters_made_visible(make_tree):
    inventory = scan(make_tree(_host()))
    inventory.devices[1].device_name = 'Evil <script>alert(1)</script> "GPU"\x1b[31m'
    svg = render_svg(inventory)
    ET.fromstring(svg)  # still well-formed XML: no raw escape character, no markup from the name
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "\\x1b[31m" in svg


def test_a_thousand_function_host_stays_one_row_per_node(tmp_path):
    inventory = scan(write_tree(build_synthetic_host(1024), tmp_path / "host"))
    rows = build_rows(inventory)
    folded_vfs = sum(1 for function in inventory.devices if function.physfn)
    root_complexes = sum(1 for row in rows if row.kind == "root-complex")
    assert len(rows) == len(inventory.devices) - folded_vfs + 4 + root_complexes
    svg = render_svg(inventory)
    root = ET.fromstring(svg)
    # Too many groups for a legend: the badges name them, and the picture says so.
    assert len(inventory.groups) > LEGEND_MAX_GROUPS and "too many to list here" in svg
    # The B550-style chipset of the synthetic host is found behind its root port.
    chipset_rows = [row for row in rows if row.under is not None and row.under.where == "chipset"]
    assert any(row.name.startswith("Navi") or "Lexa" in row.name for row in chipset_rows)
    assert int(root.get("width")) < 1400  # as wide as its longest row, not as its count of functions
