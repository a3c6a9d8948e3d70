"""The one way each host value enters each kind of generated text.

Everything configgen writes about a host came from somewhere we do not control: names from
pci.ids, a driver's name (the name of a sysfs link), the path of a host tree, a capture
attached to a bug report, a JSON inventory. A newline in any of them would end a comment
and start a command, so every value passes through one function here for the context it
lands in:

- :func:`comment_text` for ``#`` line comments (sh, Proxmox .conf, .vmx, PowerShell) and
  :func:`xml_comment_text` for ``<!-- -->``: anything goes in, control characters come out
  as visible escapes (``\\n``, ``\\x1b``, ``\\u2028``), so the comment stays one line.
- :func:`shell_word`, :func:`powershell_string`, :func:`xml_value` and :func:`exact_value`
  for values a program reads back exactly (a ROM path, an address, the VM's name): quoted
  for their language, and *refused* with :class:`ConfigError` when they hold a control
  character, because changing them silently would point the VM at something else.
- :func:`vmx_value` for ``key = "value"`` in a .vmx, escaped the way VMware does
  (``|22`` for ``"``), which VMware reads back exactly, so nothing needs refusing.

Imports: errors (for :class:`ConfigError`) only; the generators and spec (its ROM-file check)
import this.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from passthrough.configgen.errors import ConfigError

# What may not appear in generated text except as an escape:
# C0 controls (every line break among them: LF, CR, VT, FF, FS, GS, RS), DEL and C1 (NEL),
# Arabic letter mark, LRM/RLM, the line and paragraph separators, the bidirectional
# embeddings, overrides and isolates ("Trojan Source": they reorder what a reader sees),
# lone surrogates (os.readlink's surrogateescape for bytes that are not UTF-8; they cannot
# even be written out as UTF-8) and U+FFFE/U+FFFF, which XML 1.0 forbids.
UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]"
)

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# PowerShell closes a single-quoted string at any of these, not only at the ASCII quote.
_POWERSHELL_QUOTES = re.compile(r"['\u2018\u2019\u201a\u201b]")
# .vmx values are read with |XX (hex of a byte) decoded; '|' and '"' are what VMware escapes.
_VMX_ESCAPED = re.compile(f'[|"]|{UNSAFE.pattern}')
_SHOWN = 80


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def comment_text(value: object) -> str:
    """Text for a ``#`` line comment, every unsafe character written as a visible escape:
    only a line break ends such a comment, and none gets through."""
    return UNSAFE.sub(_visible, str(value))


def comment_lines(lines: Iterable[str], prefix: str = "# ") -> list[str]:
    """Each line as one ``#`` comment line: ``prefix`` and the line's :func:`comment_text`."""
    return [prefix + comment_text(line) for line in lines]


def xml_comment_text(value: object) -> str:
    """Text for inside ``<!-- -->``, where ``--`` may not appear at all (so neither may ``-->``)."""
    return re.sub("-(?=-)", "- ", comment_text(value))


def exact_value(value: str, what: str) -> str:
    """``value`` unchanged, or :class:`ConfigError` if it holds a character that would break its line."""
    found = UNSAFE.search(value)
    if found is not None:
        shown = value if len(value) <= _SHOWN else value[:_SHOWN] + "…"
        raise ConfigError(
            f"The {what} {shown!r} holds the control character {_visible(found)}, which would break the generated "
            "config, so nothing was generated.",
            hint="Give the value without control characters or line breaks; if it came from a host tree, "
            "read the host again (a capture may have been edited).",
        )
    return value


def shell_word(value: str, what: str) -> str:
    """One ``sh`` word that is exactly ``value`` (:func:`shlex.quote`), refused if it holds a control character."""
    return shlex.quote(exact_value(value, what))


def powershell_string(value: str, what: str) -> str:
    """A single-quoted PowerShell string, quotes doubled; refused if ``value`` holds a control character."""
    doubled = _POWERSHELL_QUOTES.sub(lambda match: match.group() * 2, exact_value(value, what))
    return f"'{doubled}'"


def xml_value(value: str, what: str) -> str:
    """Element text or an attribute value for ElementTree, which escapes ``<>&"`` but would write
    control characters as they are (not XML at all); refused if ``value`` holds one."""
    return exact_value(value, what)


def _vmx_escape(match: re.Match[str]) -> str:
    char = match.group()
    # A lone surrogate stands for the byte os.fsdecode could not decode; write that byte back.
    data = char.encode("utf-8", "surrogateescape") if "\udc80" <= char <= "\udcff" else char.encode("utf-8", "replace")
    return "".join(f"|{byte:02X}" for byte in data)


def vmx_value(value: object) -> str:
    """``"value"`` for a .vmx line: ``|``, ``"`` and control characters as ``|XX``, the bytes VMware decodes."""
    return '"' + _VMX_ESCAPED.sub(_vmx_escape, str(value)) + '"'
