"""The PCIe tree of a host as an SVG picture, colored by IOMMU group.

The layout is an indented tree, as ``lspci -tv`` prints it but drawn: one row per node,
columns by depth (root complex, root port, switch ports, endpoints). A row per node keeps
a 1,000-function server readable: the picture grows in height, never in density. The
virtual functions of an SR-IOV device are folded into one row under their physical
function (a NIC with 128 VFs is one line, "128 virtual functions, groups 40–167").
Host-critical functions get a red outline and a warning mark.

Pure Python: :func:`build_rows` gives the layout, :func:`render_svg` the markup.
"""

from __future__ import annotations

import colorsys
from collections import defaultdict
from dataclasses import dataclass, field
from html import escape

from passthrough.inventory import Inventory, PciFunction

ROW_HEIGHT = 26
INDENT = 28
LABEL_WIDTH = 680
LEFT_MARGIN = 12
TOP_MARGIN = 40


@dataclass
class Row:
    depth: int
    title: str
    detail: str = ""
    address: str | None = None
    group: int | None = None
    critical: bool = False
    kind: str = "device"  # root-complex, bridge, device, vfs
    href: str | None = None
    children: list[Row] = field(default_factory=list)


def group_color(group: int | None) -> str:
    """A stable, distinguishable color per group (golden-angle hues); grey without a group."""
    if group is None:
        return "#d0d4d9"
    hue = (group * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hls_to_rgb(hue, 0.82, 0.55)
    return f"#{int(red * 255):02x}{int(green * 255):02x}{int(blue * 255):02x}"


def _short(address: str) -> str:
    return address[5:] if address.startswith("0000:") else address


def _function_row(function: PciFunction, inventory: Inventory, link: str | None) -> Row:
    title = f"{_short(function.address)}  {function.label}"
    facts = [function.class_name or "unknown class"]
    if function.driver:
        facts.append(f"driver {function.driver}")
    if function.iommu_group is not None:
        facts.append(f"group {function.iommu_group}")
    return Row(
        depth=0,
        title=title,
        detail=" · ".join(facts),
        address=function.address,
        group=function.iommu_group,
        critical=function.address in inventory.host_critical,
        kind="bridge" if function.is_bridge else "device",
        href=link.format(address=function.address) if link else None,
    )


def build_rows(inventory: Inventory, link: str | None = None) -> list[Row]:
    """Flattened rows in drawing order; ``link`` is a URL pattern with ``{address}``."""
    children: dict[str | None, list[PciFunction]] = defaultdict(list)
    vfs: dict[str, list[PciFunction]] = defaultdict(list)
    for function in inventory.devices:
        if function.physfn and inventory.device(function.physfn):
            vfs[function.physfn].append(function)
        else:
            children[function.parent].append(function)

    roots: dict[str, list[PciFunction]] = defaultdict(list)
    for function in children[None]:
        domain_bus = function.address.rsplit(":", 1)[0]
        roots[domain_bus].append(function)

    rows: list[Row] = []

    def visit(function: PciFunction, depth: int) -> None:
        row = _function_row(function, inventory, link)
        row.depth = depth
        rows.append(row)
        own_vfs = vfs.get(function.address, [])
        if own_vfs:
            groups = sorted(vf.iommu_group for vf in own_vfs if vf.iommu_group is not None)
            span = (
                f"groups {groups[0]}–{groups[-1]}"
                if len(groups) > 1
                else (f"group {groups[0]}" if groups else "no groups")
            )
            drivers = sorted({vf.driver or "no driver" for vf in own_vfs})
            rows.append(
                Row(
                    depth=depth + 1,
                    title=f"{len(own_vfs)} virtual function{'s' if len(own_vfs) > 1 else ''}",
                    detail=f"{span} · {', '.join(drivers)}",
                    group=groups[0] if len(groups) == 1 else None,
                    kind="vfs",
                    critical=any(vf.address in inventory.host_critical for vf in own_vfs),
                )
            )
        for child in children.get(function.address, []):
            visit(child, depth + 1)

    for domain_bus in sorted(roots, key=lambda key: (len(key), key)):
        rows.append(Row(depth=0, title=f"Root complex {domain_bus}", detail="PCI root bus", kind="root-complex"))
        for function in roots[domain_bus]:
            visit(function, 1)
    return rows


def render_svg(inventory: Inventory, link: str | None = None, title: str = "PCIe topology") -> str:
    rows = build_rows(inventory, link)
    max_depth = max((row.depth for row in rows), default=0)
    width = LEFT_MARGIN * 2 + max_depth * INDENT + LABEL_WIDTH
    height = TOP_MARGIN + len(rows) * ROW_HEIGHT + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="topology" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" font-family="system-ui, sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT_MARGIN}" y="20" font-size="14" font-weight="600">{escape(title)}: '
        f"{len(inventory.devices)} functions, {len(inventory.groups)} IOMMU groups</text>",
    ]
    # Connectors first, so boxes draw over them: from each row to its parent row.
    stack: list[tuple[int, int]] = []  # (depth, row index)
    for index, row in enumerate(rows):
        while stack and stack[-1][0] >= row.depth:
            stack.pop()
        if stack:
            parent_depth, parent_index = stack[-1]
            x = LEFT_MARGIN + parent_depth * INDENT + 8
            y_parent = TOP_MARGIN + parent_index * ROW_HEIGHT + ROW_HEIGHT - 6
            y_row = TOP_MARGIN + index * ROW_HEIGHT + ROW_HEIGHT / 2 - 2
            x_row = LEFT_MARGIN + row.depth * INDENT
            parts.append(f'<path d="M{x} {y_parent} V{y_row} H{x_row}" fill="none" stroke="#8a939c" stroke-width="1"/>')
        stack.append((row.depth, index))
    for index, row in enumerate(rows):
        parts.append(_row_svg(row, index))
    parts.append("</svg>")
    return "\n".join(parts)


def _row_svg(row: Row, index: int) -> str:
    x = LEFT_MARGIN + row.depth * INDENT
    y = TOP_MARGIN + index * ROW_HEIGHT
    fill = "#ffffff" if row.kind == "root-complex" else group_color(row.group)
    stroke, stroke_width = ("#c0392b", 2.5) if row.critical else ("#6b7680", 1)
    dash = ' stroke-dasharray="4 2"' if row.kind in ("bridge", "vfs") else ""
    box_width = LABEL_WIDTH - 8
    label = escape(row.title if len(row.title) <= 70 else row.title[:69] + "…")
    detail = escape(row.detail)
    warning = ""
    if row.critical:
        warning = f'<text x="{x + box_width - 16}" y="{y + 16}" fill="#c0392b" font-weight="700" aria-label="host-critical">⚠</text>'
    tooltip = f"<title>{label} — {detail}{' — host-critical' if row.critical else ''}</title>"
    body = (
        f'<g class="row {row.kind}{" critical" if row.critical else ""}" data-group="{"" if row.group is None else row.group}">'
        f"{tooltip}"
        f'<rect x="{x}" y="{y + 2}" width="{box_width}" height="{ROW_HEIGHT - 6}" rx="4" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="{stroke_width}"{dash}/>'
        f'<text x="{x + 6}" y="{y + 16}">{label}'
        f'<tspan fill="#4a5560" font-size="11"> — {detail}</tspan></text>{warning}</g>'
    )
    if row.href:
        return f'<a href="{escape(row.href)}">{body}</a>'
    return body
