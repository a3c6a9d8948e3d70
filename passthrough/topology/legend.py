"""The key on top of the topology picture, and the legend of its IOMMU groups.

The key explains every mark the tree uses and says what the snapshot lacks (no link
speeds, no NUMA node) rather than leaving a column silently empty; the CPU-or-chipset
marks come with the words that they are a guess. The legend lists each group drawn with
its badge, its first member and whether it can be passed through; past
``LEGEND_MAX_GROUPS`` groups it says so in one line and the badges alone name them.
"""

from __future__ import annotations

import math

from passthrough.pci.model import Inventory, IommuGroup
from passthrough.topology.canvas import (
    CHIPSET_COLOR,
    CPU_COLOR,
    CRITICAL,
    INK,
    LEFT,
    LINE,
    MUTED,
    NAME_SIZE,
    PALETTE,
    SMALL_SIZE,
    Canvas,
    badge_width,
    pill_width,
    safe_text,
)
from passthrough.topology.layout import Row
from passthrough.topology.textwidth import text_width

LEGEND_MAX_GROUPS = 64  # more than this and the badges alone name the groups


def draw_key(canvas: Canvas, rows: list[Row], y: float, width: float) -> float:
    """The marks explained, flowed into lines as wide as the picture."""
    items: list[tuple[str, str]] = [
        ("badge", "IOMMU group (number and color; one group goes to a VM whole)"),
        ("bridge", "bridge (stays with the host)"),
        ("critical", "host-critical: the host needs it"),
        ("break", ""),
        ("vfio", "on vfio-pci"),
        ("host", "on a host driver"),
        ("none", "no driver"),
    ]
    if any(row.link for row in rows):
        items.append(("below", "link slower or narrower than its maximum now (an idle GPU often is)"))
    else:
        items.append(("text", "Link speed and width: not in this snapshot."))
    if not any(row.numa is not None for row in rows):
        items.append(("text", "NUMA node: none reported (one node)."))
    if any(row.attachment for row in rows):
        items.append(("break", ""))
        items.append(("cpu", "CPU root port"))
        items.append(("chipset", "behind the chipset, sharing its one uplink: put a VM's GPU on a CPU root port"))
        items.append(("text", "Both guessed from addresses and ids; the kernel does not say."))
    x, line_y = float(LEFT), y + 8
    for mark, words in items:
        if mark == "break":
            x, line_y = float(LEFT), line_y + 22
            continue
        mark_width = {"badge": 24.0, "bridge": 30.0, "critical": 30.0, "below": 12.0, "cpu": 10.0, "chipset": 10.0}.get(
            mark, 0.0
        )
        if mark in ("vfio", "host", "none"):
            mark_width = pill_width({"vfio": "vfio-pci", "host": "nvme", "none": "no driver"}[mark])
        item_width = mark_width + (6 if mark_width else 0) + text_width(words, SMALL_SIZE)
        if x > LEFT and x + item_width > width - LEFT:
            x, line_y = float(LEFT), line_y + 22
        _key_mark(canvas, mark, x, line_y)
        canvas.text(
            x + mark_width + (6 if mark_width else 0), line_y + 12.5, words, fill=MUTED if mark == "text" else INK
        )
        x += item_width + 18
    return line_y + 26


def _key_mark(canvas: Canvas, mark: str, x: float, y: float) -> None:
    if mark == "badge":
        canvas.badge(x, y + 1, "7", PALETTE[3][1])
    elif mark in ("bridge", "critical"):
        stroke = (
            f'stroke="{CRITICAL}" stroke-width="2.5"'
            if mark == "critical"
            else f'stroke="{LINE}" stroke-dasharray="4 2"'
        )
        canvas.parts.append(
            f'<rect x="{x:.1f}" y="{y + 1:.1f}" width="30" height="15" rx="4" fill="#ffffff" {stroke}/>'
        )
        if mark == "critical":
            canvas.text(x + 10, y + 13, "⚠", size=NAME_SIZE, fill=CRITICAL, bold=True)
    elif mark in ("vfio", "host", "none"):
        canvas.pill(x, y, {"vfio": "vfio-pci", "host": "nvme", "none": "no driver"}[mark], mark)
    elif mark == "below":
        canvas.text(x, y + 12.5, "▼", fill=CRITICAL, bold=True)
    elif mark in ("cpu", "chipset"):
        color = CPU_COLOR if mark == "cpu" else CHIPSET_COLOR
        canvas.parts.append(f'<rect x="{x + 3:.1f}" y="{y - 2:.1f}" width="5" height="21" fill="{color}"/>')


def _group_summary(inventory: Inventory, group: IommuGroup) -> str:
    members = [inventory.device(address) for address in (group.endpoints or group.devices)]
    named = [function for function in members if function is not None]
    if not named:
        return "empty"
    more = f" +{len(named) - 1}" if len(named) > 1 else ""
    return f"{named[0].label}{more}"


def draw_group_legend(
    canvas: Canvas, inventory: Inventory, colors: dict[int, tuple[str, str]], y: float, width: float
) -> float:
    drawn = [group for group in inventory.groups if group.id in colors]
    if not drawn:
        return y
    if len(drawn) > LEGEND_MAX_GROUPS:
        canvas.text(
            LEFT, y + 12,
            f"IOMMU groups: {len(inventory.groups)}, too many to list here; each row's badge carries its group's "
            "number, and the Devices page lists every group.",
        )  # fmt: skip
        return y + 24
    canvas.text(LEFT, y + 12, "IOMMU groups (✓ can be passed through as a whole, ✗ cannot)", bold=True)
    entries = [(group, f"{'✓' if group.viable else '✗'} {_group_summary(inventory, group)}") for group in drawn]
    widest_badge = max(badge_width(str(group.id)) for group, _ in entries)
    column_width = widest_badge + 6 + max(text_width(words, SMALL_SIZE) for _, words in entries) + 20
    per_line = max(1, int((width - 2 * LEFT + 20) // column_width))
    lines = math.ceil(len(entries) / per_line)
    for index, (group, words) in enumerate(entries):
        x = LEFT + (index // lines) * column_width
        entry_y = y + 22 + (index % lines) * 20
        canvas.badge(x + widest_badge - badge_width(str(group.id)), entry_y, str(group.id), colors[group.id][1])
        canvas.parts.append(
            f'<text x="{x + widest_badge + 6:.1f}" y="{entry_y + 11.5:.1f}" font-size="{SMALL_SIZE}">'
            f'<tspan fill="{"#1e7b34" if group.viable else CRITICAL}" font-weight="700">{words[0]}</tspan>'
            f"{safe_text(words[1:])}</text>"
        )
    return y + 22 + lines * 20
