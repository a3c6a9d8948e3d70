"""How the pages show text written for a terminal or a file.

The domain's words mark a command or a value with backticks (`modprobe vfio`), as the
shell commands print them; a page shows those as code instead. A readiness fix mixes
words, commands and lines to put in a file: the page shows each command and each block
of lines with its own Copy button, so Copy takes the command, not the sentence around
it. A generated configuration opens with a long comment (how to use it, the devices,
the host's requirements): the page shows the configuration's own lines first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

CODE = re.compile(r"`([^`\n]+)`")
BLOCK_INDENT = "    "


@dataclass
class Block:
    """One paragraph of a fix: words with inline commands, or lines given as they are."""

    literal: str | None = None  # lines to type or put in a file, as they are
    parts: list[tuple[str, bool]] = field(default_factory=list)  # (text, is a command)


def split_code(text: str) -> list[tuple[str, bool]]:
    """``"run `x` now"`` -> ``[("run ", False), ("x", True), (" now", False)]``."""
    pieces = CODE.split(text)
    return [(piece, index % 2 == 1) for index, piece in enumerate(pieces) if piece]


@register.filter
def code_spans(text: str | None) -> SafeString:
    """The text, escaped, with each `backticked` part as <code>."""
    return mark_safe(  # noqa: S308 -- every piece is escaped here
        "".join(
            format_html("<code>{}</code>", piece) if is_code else str(escape(piece))
            for piece, is_code in split_code(text or "")
        )
    )


@register.filter
def fix_blocks(text: str | None) -> list[Block]:
    """A fix as paragraphs: each line of words one paragraph, indented lines one literal block."""
    blocks: list[Block] = []
    for line in (text or "").splitlines():
        if line.startswith(BLOCK_INDENT):
            if blocks and blocks[-1].literal is not None:
                blocks[-1].literal += "\n" + line[len(BLOCK_INDENT) :]
            else:
                blocks.append(Block(literal=line[len(BLOCK_INDENT) :]))
        elif line.strip():
            blocks.append(Block(parts=split_code(line)))
    return blocks


@register.filter
def config_parts(text: str) -> dict[str, list[str]]:
    """A configuration's opening comment (``head``) apart from its own lines (``body``).

    The comment is the leading ``<!-- ... -->`` of XML, or the leading ``#`` lines of the
    others (a ``#!`` line stays with the body: the script needs it first).
    """
    lines = text.splitlines()
    body_start = 0
    head: list[str] = []
    shebang = lines[:1] if lines and lines[0].startswith("#!") else []
    rest = lines[len(shebang) :]
    if rest and rest[0].startswith("<!--"):
        end = next((index for index, line in enumerate(rest) if line.rstrip().endswith("-->")), None)
        if end is not None:
            head, body_start = rest[: end + 1], end + 1
    else:
        while body_start < len(rest) and rest[body_start].startswith("#") and not rest[body_start].startswith("#!"):
            body_start += 1
        head = rest[:body_start]
    body = rest[body_start:]
    while body and not body[0].strip():
        body = body[1:]
    return {"head": head, "body": shebang + body}
