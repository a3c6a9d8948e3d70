"""The rows of :mod:`passthrough.topology.layout` drawn as one SVG picture.

Meant to be read on screen and on paper: the key and the groups' legend on top
(:mod:`passthrough.topology.legend`), then the tree with one column each for the
driver, the link, the NUMA node and the CPU-or-chipset guess. Every box is as wide as
its words (:mod:`passthrough.topology.textwidth`), so nothing is cut; every column as
wide as the widest thing it holds.

Colors: sixteen, handed out in drawing order, each new group taking the color unused for
the longest (:func:`group_colors`): a host with up to sixteen groups drawn has one color
per group, and past that a color comes back only after fifteen other groups have been
drawn since its last use. The badge's number tells every group apart, on paper in black
and white too.

Every text from the snapshot is escaped, control characters written as visible escapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from passthrough.pci.model import Inventory
from passthrough.topology.attachment import Attachment
from passthrough.topology.canvas import (
    CHIPSET_COLOR,
    CPU_COLOR,
    CRITICAL,
    GAP,
    INDENT,
    INK,
    LEFT,
    LINE,
    MIN_WIDTH,
    MUTED,
    NAME_SIZE,
    NO_GROUP_BADGE,
    NO_GROUP_FILL,
    PALETTE,
    ROW_HEIGHT,
    SMALL_SIZE,
    TREE_X,
    Canvas,
    badge_width,
    pill_width,
    safe_text,
)
from passthrough.topology.layout import Row, build_rows
from passthrough.topology.legend import draw_group_legend, draw_key
from passthrough.topology.textwidth import FONT_FAMILY, text_width


def group_colors(rows: list[Row]) -> dict[int, tuple[str, str]]:
    """Group id -> (fill, badge) for every group drawn; the longest-unused color goes to each new group."""
    last_used = [-1] * len(PALETTE)
    chosen: dict[int, int] = {}
    for index, row in enumerate(rows):
        if row.group is None:
            continue
        if row.group not in chosen:
            chosen[row.group] = min(range(len(PALETTE)), key=lambda color: (last_used[color], color))
        last_used[chosen[row.group]] = index
    return {group: PALETTE[color] for group, color in chosen.items()}


@dataclass
class _Columns:
    """Where each column starts, sized to the widest thing it holds."""

    tree_right: float
    driver_x: float
    link_x: float | None
    numa_x: float | None
    attach_x: float | None
    width: float


HEADERS = {"tree": "PCI function", "driver": "Driver", "link": "Link now", "numa": "NUMA", "attach": "Attached to"}


def _content_width(row: Row) -> float:
    """From the box's left edge to the end of its words (and warning mark)."""
    width = 5 + (badge_width(row.badge) + 6 if row.kind != "root-complex" else 0)
    width += text_width(row.title, NAME_SIZE)
    if row.detail:
        width += 8 + text_width(row.detail, SMALL_SIZE)
    if row.critical:
        width += 6 + text_width("⚠", NAME_SIZE)
    return width + 8


def _link_width(row: Row) -> float:
    if row.link is None:
        return 0
    width = text_width(row.link.text, SMALL_SIZE)
    if row.link.below_max:
        width += text_width(f" ▼ max {row.link.max_text}", SMALL_SIZE, bold=True)
    return width


def _columns(rows: list[Row]) -> _Columns:
    tree_right = max(
        [TREE_X + text_width(HEADERS["tree"], SMALL_SIZE, bold=True)]
        + [TREE_X + row.depth * INDENT + _content_width(row) for row in rows]
    )
    x = tree_right + GAP
    driver_x = x
    x += max(
        [text_width(HEADERS["driver"], SMALL_SIZE, bold=True)] + [pill_width(row.driver) for row in rows if row.driver]
    )
    link_x = numa_x = attach_x = None
    if any(row.link for row in rows):
        link_x = x = x + GAP
        x += max([text_width(HEADERS["link"], SMALL_SIZE, bold=True)] + [_link_width(row) for row in rows])
    if any(row.numa is not None for row in rows):
        numa_x = x = x + GAP
        x += max(
            [text_width(HEADERS["numa"], SMALL_SIZE, bold=True)]
            + [text_width(f"node {row.numa}", SMALL_SIZE) for row in rows]
        )
    if any(row.attachment for row in rows):
        attach_x = x = x + GAP
        x += max(
            [text_width(HEADERS["attach"], SMALL_SIZE, bold=True)]
            + [pill_width(row.attachment.label) for row in rows if row.attachment]
        )
    return _Columns(tree_right, driver_x, link_x, numa_x, attach_x, max(MIN_WIDTH, x + LEFT))


def render_svg(inventory: Inventory, link: str | None = None, title: str = "PCIe topology") -> str:
    rows = build_rows(inventory, link)
    colors = group_colors(rows)
    columns = _columns(rows)
    canvas = Canvas()
    y = _header(canvas, inventory, rows, title, columns.width)
    y = draw_key(canvas, rows, y, columns.width)
    y = draw_group_legend(canvas, inventory, colors, y, columns.width)
    y = _column_headers(canvas, columns, y + 8)
    top = y
    _bars(canvas, rows, top)
    _connectors(canvas, rows, top)
    for index, row in enumerate(rows):
        _row(canvas, row, columns, top + index * ROW_HEIGHT, colors)
    height = top + len(rows) * ROW_HEIGHT + 12
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="topology" role="img" viewBox="0 0 {columns.width:.0f} {height:.0f}" '
        f'width="{columns.width:.0f}" height="{height:.0f}" font-family="{FONT_FAMILY}" font-size="{NAME_SIZE}" fill="{INK}">'
        f"<title>{safe_text(title)}</title>"
    )
    return "\n".join([head, *canvas.parts, "</svg>"])


def _header(canvas: Canvas, inventory: Inventory, rows: list[Row], title: str, width: float) -> float:
    canvas.text(LEFT, 22, title, size=15, bold=True)
    on_vfio = sum(1 for function in inventory.devices if function.driver == "vfio-pci")
    summary = f"{len(inventory.devices)} functions, {len(inventory.groups)} IOMMU groups, {on_vfio} on vfio-pci"
    if inventory.root not in ("", "/"):
        summary += f", read from the host tree at {inventory.root}"
    canvas.text(LEFT, 40, summary, fill=MUTED)
    return 52


def _column_headers(canvas: Canvas, columns: _Columns, y: float) -> float:
    canvas.text(TREE_X, y + 12, HEADERS["tree"], fill=MUTED, bold=True)
    canvas.text(columns.driver_x, y + 12, HEADERS["driver"], fill=MUTED, bold=True)
    for key, x in (("link", columns.link_x), ("numa", columns.numa_x), ("attach", columns.attach_x)):
        if x is not None:
            canvas.text(x, y + 12, HEADERS[key], fill=MUTED, bold=True)
    canvas.parts.append(
        f'<path d="M{LEFT} {y + 18:.1f} H{columns.width - LEFT:.1f}" stroke="#c9ced4" stroke-width="1"/>'
    )
    return y + 22


def _bars(canvas: Canvas, rows: list[Row], top: float) -> None:
    """A bar down the left edge beside each root port's subtree: blue for the CPU, amber for the chipset."""
    start = 0
    for index in range(1, len(rows) + 1):
        current: Attachment | None = rows[start].under
        if index < len(rows) and rows[index].under is current:
            continue
        if current is not None:
            color = CPU_COLOR if current.where == "cpu" else CHIPSET_COLOR
            canvas.parts.append(
                f'<rect class="bar {current.where}" x="{LEFT}" y="{top + start * ROW_HEIGHT + 2}" width="5" '
                f'height="{(index - start) * ROW_HEIGHT - 4}" rx="2" fill="{color}"><title>{safe_text(current.label)}: '
                f"{safe_text(current.reason)}</title></rect>"
            )
        start = index


def _connectors(canvas: Canvas, rows: list[Row], top: float) -> None:
    """From each row to its parent row; drawn first, so boxes cover their ends."""
    stack: list[tuple[int, int]] = []  # (depth, row index)
    for index, row in enumerate(rows):
        while stack and stack[-1][0] >= row.depth:
            stack.pop()
        if stack:
            parent_depth, parent_index = stack[-1]
            x = TREE_X + parent_depth * INDENT + 9
            y_parent = top + parent_index * ROW_HEIGHT + ROW_HEIGHT - 4
            y_row = top + index * ROW_HEIGHT + ROW_HEIGHT / 2
            canvas.parts.append(
                f'<path d="M{x} {y_parent} V{y_row} H{TREE_X + row.depth * INDENT}" fill="none" stroke="{LINE}" stroke-width="1"/>'
            )
        stack.append((row.depth, index))


def _tooltip(row: Row) -> str:
    facts = [row.title, row.detail]
    if row.badge:
        facts.append(f"IOMMU group {row.badge}")
    if row.driver:
        facts.append(f"driver: {row.driver}")
    if row.link:
        facts.append(f"link {row.link.text}, max {row.link.max_text}")
    if row.numa is not None:
        facts.append(f"NUMA node {row.numa}")
    if row.attachment:
        facts.append(f"{row.attachment.label}: {row.attachment.reason}")
    facts += [f"host-critical: {reason}" for reason in row.critical]
    return " — ".join(fact for fact in facts if fact)


def _row(canvas: Canvas, row: Row, columns: _Columns, y: float, colors: dict[int, tuple[str, str]]) -> None:
    x = TREE_X + row.depth * INDENT
    fill, badge_fill = colors[row.group] if row.group is not None else (NO_GROUP_FILL, NO_GROUP_BADGE)
    if row.kind == "root-complex":
        fill = "#ffffff"
    stroke = f'stroke="{CRITICAL}" stroke-width="2.5"' if row.critical else 'stroke="#6b7680" stroke-width="1"'
    dash = ' stroke-dasharray="4 2"' if row.kind in ("bridge", "vfs") else ""
    classes = " ".join(["row", row.kind, *(["critical"] if row.critical else [])])
    parts = canvas.parts
    start = len(parts)
    parts.append(
        f'<g class="{classes}" data-group="{safe_text(row.badge)}" data-driver="{row.driver_state or ""}" '
        f'data-attached="{row.under.where if row.under else ""}">'
        f"<title>{safe_text(_tooltip(row))}</title>"
        f'<rect class="box" x="{x}" y="{y + 2}" width="{columns.tree_right - x:.1f}" height="{ROW_HEIGHT - 5}" rx="4" '
        f'fill="{fill}" {stroke}{dash}/>'
    )
    text_x = x + 5.0
    if row.kind != "root-complex":
        text_x += canvas.badge(text_x, y + 5, row.badge or "–", badge_fill) + 6
    detail = (
        f'<tspan fill="{MUTED}" font-size="{SMALL_SIZE}" dx="8">{safe_text(row.detail)}</tspan>' if row.detail else ""
    )
    parts.append(
        f'<text class="label" x="{text_x:.1f}" y="{y + 17}" font-size="{NAME_SIZE}">{safe_text(row.title)}{detail}</text>'
    )
    if row.critical:
        mark_x = (
            text_x
            + text_width(row.title, NAME_SIZE)
            + (8 + text_width(row.detail, SMALL_SIZE) if row.detail else 0)
            + 6
        )
        parts.append(
            f'<text x="{mark_x:.1f}" y="{y + 17}" fill="{CRITICAL}" font-weight="700" aria-label="host-critical">⚠</text>'
        )
    if row.driver:
        canvas.pill(columns.driver_x, y + 4, row.driver, row.driver_state)
    if row.link and columns.link_x is not None:
        below = (
            f'<tspan fill="{CRITICAL}" font-weight="700"> ▼ max {safe_text(row.link.max_text)}</tspan>'
            if row.link.below_max
            else ""
        )
        parts.append(
            f'<text x="{columns.link_x:.1f}" y="{y + 17}" font-size="{SMALL_SIZE}">{safe_text(row.link.text)}{below}</text>'
        )
    if row.numa is not None and columns.numa_x is not None:
        canvas.text(columns.numa_x, y + 17, f"node {row.numa}")
    if row.attachment and columns.attach_x is not None:
        canvas.pill(columns.attach_x, y + 4, row.attachment.label, row.attachment.where)
    parts.append("</g>")
    if row.href:
        parts[start] = f'<a href="{safe_text(row.href)}">' + parts[start]
        parts[-1] += "</a>"
