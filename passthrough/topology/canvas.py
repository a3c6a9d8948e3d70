"""The marks the topology picture is drawn with: sizes, colors, badges, pills, escaped text.

Shared by the tree (:mod:`passthrough.topology.svg`) and its key and legend
(:mod:`passthrough.topology.legend`), so a mark means the same in both.
"""

from __future__ import annotations

import unicodedata
from html import escape

from passthrough.topology.textwidth import text_width

ROW_HEIGHT = 26
INDENT = 22
LEFT = 12  # the CPU/chipset bar sits here, the tree starts after it
TREE_X = LEFT + 14
GAP = 16  # between columns
NAME_SIZE, SMALL_SIZE, BADGE_SIZE = 12.0, 11.0, 10.5
MIN_WIDTH = 760

INK, MUTED, LINE = "#1d2730", "#4f5b66", "#8a939c"
CRITICAL = "#c0392b"
VFIO = "#6a3d9a"
CPU_COLOR, CHIPSET_COLOR = "#2f6fb3", "#d08a00"
NO_GROUP_FILL, NO_GROUP_BADGE = "#e3e6ea", "#6b7680"


# (box fill, badge fill) per color, in the order they are handed out: each differs in hue
# from the few before it. Fills are light enough for dark words, badges dark for white ones.
PALETTE: tuple[tuple[str, str], ...] = (
    ("#bbdefb", "#1565c0"),  # blue
    ("#ffcc80", "#b34700"),  # orange
    ("#c5e8bd", "#2e7d32"),  # green
    ("#ffcdd2", "#c62828"),  # red
    ("#e1bee7", "#6a1b9a"),  # purple
    ("#fff59d", "#7a6a00"),  # yellow
    ("#b2dfdb", "#00695c"),  # teal
    ("#f8bbd0", "#ad1457"),  # pink
    ("#d7ccc8", "#5d4037"),  # brown
    ("#b2ebf2", "#00727d"),  # cyan
    ("#e6ee9c", "#5f6b00"),  # lime
    ("#c5cae9", "#283593"),  # indigo
    ("#b9f6ca", "#00703a"),  # mint
    ("#dcedc8", "#4a7a23"),  # light green
    ("#d1c4e9", "#4527a0"),  # violet
    ("#ffe0b2", "#8a5a00"),  # amber
)


def safe_text(value: str) -> str:
    """Escaped for XML text and attributes; a control character becomes a visible \\xNN."""
    if any(unicodedata.category(character) == "Cc" for character in value):
        value = "".join(
            f"\\x{ord(character):02x}" if unicodedata.category(character) == "Cc" else character for character in value
        )
    return escape(value)


def badge_width(text: str) -> float:
    return max(18.0, text_width(text, BADGE_SIZE, bold=True) + 8)


def pill_width(text: str) -> float:
    return text_width(text, SMALL_SIZE) + 12


class Canvas:
    """SVG elements collected in drawing order."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def text(
        self, x: float, y: float, value: str, *, size: float = SMALL_SIZE, fill: str = INK, bold: bool = False
    ) -> None:
        weight = ' font-weight="700"' if bold else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}"{weight}>{safe_text(value)}</text>'
        )

    def badge(self, x: float, y: float, label: str, fill: str) -> float:
        width = badge_width(label)
        self.parts.append(
            f'<rect class="badge" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="15" rx="7.5" fill="{fill}"/>'
            f'<text x="{x + width / 2:.1f}" y="{y + 11:.1f}" font-size="{BADGE_SIZE}" font-weight="700" '
            f'fill="#ffffff" text-anchor="middle">{safe_text(label)}</text>'
        )
        return width

    def pill(self, x: float, y: float, label: str, state: str | None) -> float:
        width = pill_width(label)
        fill, stroke, ink, dash = {
            "vfio": (VFIO, VFIO, "#ffffff", ""),
            "none": ("#ffffff", LINE, MUTED, ' stroke-dasharray="3 2"'),
            "cpu": (CPU_COLOR, CPU_COLOR, "#ffffff", ""),
            "chipset": (CHIPSET_COLOR, CHIPSET_COLOR, "#1d1400", ""),
        }.get(state or "", ("#ffffff", "#6b7680", INK, ""))
        self.parts.append(
            f'<rect class="pill {state or ""}" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="17" rx="8.5" '
            f'fill="{fill}" stroke="{stroke}"{dash}/>'
            f'<text x="{x + 6:.1f}" y="{y + 12.5:.1f}" font-size="{SMALL_SIZE}" fill="{ink}">{safe_text(label)}</text>'
        )
        return width
