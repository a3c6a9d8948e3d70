"""The topology picture: every function placed under its bridge, VFs folded, critical ones marked."""

import xml.etree.ElementTree as ET

from bench.synthetic import build_synthetic_host
from passthrough.inventory import scan
from passthrough.topology import build_rows, group_color, render_svg
from passthrough.treebuilder import FunctionSpec, HostSpec

SVG = "{http://www.w3.org/2000/svg}"


def _host() -> HostSpec:
    return HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "1022", "1483", "060400", driver="pcieport", iommu_group=1),
            FunctionSpec(
                "0000:01:00.0", "10de", "1d01", "030000", driver="nouveau", iommu_group=2, parent="0000:00:01.0"
            ),
            FunctionSpec(
                "0000:01:00.1", "10de", "0fb8", "040300", driver="snd_hda_intel", iommu_group=2, parent="0000:00:01.0"
            ),
            FunctionSpec(
                "0000:00:02.0", "8086", "159b", "020000", driver="ice", iommu_group=3, sriov_totalvfs=8, sriov_numvfs=2
            ),
            FunctionSpec("0000:00:02.1", "8086", "1889", "020000", driver="iavf", iommu_group=4, physfn="0000:00:02.0"),
            FunctionSpec("0000:00:02.2", "8086", "1889", "020000", driver="iavf", iommu_group=5, physfn="0000:00:02.0"),
            FunctionSpec("0000:40:00.0", "1022", "1450", "060000", iommu_group=6),
        ],
        net_devices={"eno1": "0000:00:02.0"},
        default_route="eno1",
    )


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
    assert vfs.kind == "vfs" and "groups 4–5" in vfs.detail


def test_host_critical_functions_are_marked(make_tree):
    rows = build_rows(scan(make_tree(_host())))
    assert [row.address for row in rows if row.critical] == ["0000:00:02.0"]
    svg = render_svg(scan(make_tree(_host())))
    assert svg.count('aria-label="host-critical"') == 1


def test_svg_is_well_formed_and_links_each_function(make_tree):
    svg = render_svg(scan(make_tree(_host())), link="/devices/{address}/")
    root = ET.fromstring(svg)
    hrefs = [element.get("href") for element in root.iter(f"{SVG}a")]
    assert "/devices/0000:01:00.1/" in hrefs and len(hrefs) == 5  # VF folds and root complexes have no page


def test_group_colors_are_stable_and_differ_between_neighbours():
    assert group_color(7) == group_color(7)
    assert len({group_color(group) for group in range(40)}) == 40
    assert group_color(None) == "#d0d4d9"


def test_a_thousand_function_host_stays_one_row_per_node(tmp_path):
    from passthrough.treebuilder import write_tree

    inventory = scan(write_tree(build_synthetic_host(1024), tmp_path / "host"))
    rows = build_rows(inventory)
    folded_vfs = sum(1 for function in inventory.devices if function.physfn)
    root_complexes = sum(1 for row in rows if row.kind == "root-complex")
    assert len(rows) == len(inventory.devices) - folded_vfs + 4 + root_complexes
    ET.fromstring(render_svg(inventory))
