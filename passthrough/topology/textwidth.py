"""How wide a line of text is drawn, so boxes fit their labels instead of cutting them.

SVG has no layout: a box must be sized before the browser sees the text. The picture
asks for Arial, whose widths Liberation Sans and Arimo (the fonts Linux ships in its
place) copy exactly, so the advance widths below (Arial's, in thousandths of an em) give
the drawn width. Characters outside ASCII count as wide ones; a small allowance covers
a browser that falls back to a wider font.
"""

from __future__ import annotations

FONT_FAMILY = "Arial, 'Liberation Sans', Arimo, Helvetica, sans-serif"

# Arial regular, characters 32 (space) to 126 (~), thousandths of an em.
_REGULAR = (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
)  # fmt: skip
# Arial bold, the same characters.
_BOLD = (
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611,
    975, 722, 722, 722, 722, 667, 611, 778, 722, 278, 556, 722, 611, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 333, 278, 333, 584, 556,
    333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556, 278, 889, 611, 611,
    611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
)  # fmt: skip
_OTHERS = {"–": 556, "—": 1000, "·": 278, "…": 1000, "×": 584}
_WIDE = 1000  # CJK, symbols (⚠ ▼ ✓ drawn from a fallback font) and anything else unknown
_ALLOWANCE = 1.04


def text_width(text: str, size: float, *, bold: bool = False) -> float:
    """The width in pixels of ``text`` at ``size`` pixels, rounded up a little."""
    table = _BOLD if bold else _REGULAR
    units = 0
    for character in text:
        code = ord(character)
        if 32 <= code <= 126:
            units += table[code - 32]
        else:
            units += _OTHERS.get(character, _WIDE)
    return units * size / 1000 * _ALLOWANCE
