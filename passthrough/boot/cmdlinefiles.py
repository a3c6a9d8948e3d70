"""Where each boot loader keeps the kernel command line, and how to edit it as text.

A *slot* is one place in a file that holds command-line words: a GRUB_CMDLINE_LINUX
assignment in ``/etc/default/grub``, an ``options`` line of a systemd-boot entry, an
``APPEND`` line of syslinux, the quoted options of a ``refind_linux.conf`` line, or a line
of ``/etc/kernel/cmdline``. A *group* is the set of slots that together make one boot's
command line (all GRUB assignments; one loader entry). Editing works on words, so every
other character of the file is kept; these functions are pure (text in, text out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from passthrough.boot.cmdline import edit_words, parse_param, split_words

GRUB_VARIABLES = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
_GRUB_LINE = re.compile(r"^(\s*(?:export\s+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=)(.*)$")
_GRUB_REFERENCE = re.compile(r"^\$\{?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)\}?$")
_OPTIONS_LINE = re.compile(r"^(\s*options(?:\s+|$))(.*?)(\s*)$")
_APPEND_LINE = re.compile(r"^(\s*append(?:\s+|$))(.*?)(\s*)$", re.IGNORECASE)
_REFIND_LINE = re.compile(r'^(\s*"[^"]*"\s+")([^"]*)(".*)$')


@dataclass
class Slot:
    path: str
    line: int  # index into the file's lines; len(lines) or more means "a new line at the end"
    head: str
    words: list[str]
    tail: str
    variable: str | None = None  # GRUB only
    original: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.original = list(self.words)

    @property
    def changed(self) -> bool:
        return self.words != self.original

    def render(self) -> str:
        return f"{self.head}{' '.join(self.words)}{self.tail}"


def _lines(text: str) -> list[str]:
    return text.split("\n")


# ---- locating slots, one function per format ---------------------------------------


def grub_slots(path: str, text: str) -> list[Slot]:
    """GRUB_CMDLINE_LINUX[_DEFAULT] assignments, quoted with ", ' or not at all."""
    slots = []
    for index, line in enumerate(_lines(text)):
        match = _GRUB_LINE.match(line)
        if not match:
            continue
        head, variable, rest = match.groups()
        if rest[:1] in ('"', "'"):
            quote = rest[0]
            end = _closing_quote(rest, quote)
            if end is None:
                continue  # an assignment spanning lines: leave it alone rather than guess
            inner, after = rest[1:end], rest[end + 1 :]
            slots.append(Slot(path, index, head + quote, split_words(inner), quote + after, variable))
        else:
            value, _, after = rest.partition(" ")
            # An unquoted value is one shell word; once edited it may hold several, so quote it.
            tail = '"' + (" " + after if after else "")
            slots.append(Slot(path, index, head + '"', [value] if value else [], tail, variable))
    return slots


def _closing_quote(text: str, quote: str) -> int | None:
    index = 1
    while index < len(text):
        if text[index] == "\\" and quote == '"':
            index += 2
            continue
        if text[index] == quote:
            return index
        index += 1
    return None


def grub_effective(slots: list[Slot]) -> list[str]:
    """The words GRUB puts on a normal boot entry: the last LINUX and DEFAULT values,
    with ``$GRUB_CMDLINE_LINUX_DEFAULT`` references expanded as the shell would."""
    values: dict[str, list[str]] = {variable: [] for variable in GRUB_VARIABLES}
    for slot in slots:
        expanded: list[str] = []
        for word in slot.words:
            reference = _GRUB_REFERENCE.match(word)
            expanded.extend(values[reference.group(1)] if reference else [word])
        values[slot.variable or GRUB_VARIABLES[1]] = expanded
    return values["GRUB_CMDLINE_LINUX"] + values["GRUB_CMDLINE_LINUX_DEFAULT"]


def new_grub_slot(path: str, text: str, variable: str) -> Slot:
    return Slot(path, len(_lines(text.rstrip("\n"))), f'{variable}="', [], '"', variable)


def entry_slots(path: str, text: str) -> list[Slot]:
    """``options`` lines of a Boot Loader Specification entry (systemd-boot, Fedora's GRUB BLS)."""
    return _keyword_slots(path, text, _OPTIONS_LINE)


def append_slots(path: str, text: str) -> list[Slot]:
    """``APPEND`` lines of syslinux/extlinux; each belongs to one LABEL."""
    return _keyword_slots(path, text, _APPEND_LINE)


def _keyword_slots(path: str, text: str, pattern: re.Pattern[str]) -> list[Slot]:
    slots = []
    for index, line in enumerate(_lines(text)):
        match = pattern.match(line)
        if match:
            head, words, tail = match.groups()
            slots.append(
                Slot(path, index, head if head.endswith((" ", "\t")) else head + " ", split_words(words), tail)
            )
    return slots


def new_options_slot(path: str, text: str) -> Slot:
    return Slot(path, len(_lines(text.rstrip("\n"))), "options ", [], "")


def refind_slots(path: str, text: str) -> list[Slot]:
    """The second quoted field of each ``refind_linux.conf`` line (one boot option per line)."""
    slots = []
    for index, line in enumerate(_lines(text)):
        if line.lstrip().startswith("#"):
            continue
        match = _REFIND_LINE.match(line)
        if match:
            head, words, tail = match.groups()
            slots.append(Slot(path, index, head, split_words(words), tail))
    return slots


def plain_slots(path: str, text: str) -> list[Slot]:
    """``/etc/kernel/cmdline``: the whole file is command-line words."""
    slots = [
        Slot(path, index, "", split_words(line), "")
        for index, line in enumerate(_lines(text))
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return slots or [Slot(path, 0, "", [], "")]


# ---- editing ------------------------------------------------------------------------


def edit_group(slots: list[Slot], target: Slot, add: list[str], remove: list[str], *, grub: bool = False) -> None:
    """Edit one boot's command line in place: ``remove`` everywhere, each ``add`` where its
    name already is (replacing another value) or else appended to ``target``."""
    if target not in slots:
        slots.append(target)
    for slot in slots:
        slot.words = edit_words(slot.words, [], remove)
    for spec in add:
        key = parse_param(spec).key
        for slot in slots:
            if any(parse_param(word).key == key for word in slot.words):
                slot.words = edit_words(slot.words, [spec], [])
        effective = grub_effective(slots) if grub else [word for slot in slots for word in slot.words]
        if not holds(effective, spec):
            target.words = edit_words(target.words, [spec], [])


def holds(words: list[str], spec: str) -> bool:
    """Whether ``words`` carry ``spec`` exactly (name compared as the kernel does, same value)."""
    wanted = parse_param(spec)
    return any(parse_param(word).key == wanted.key and parse_param(word).value == wanted.value for word in words)


def render_file(text: str, slots: list[Slot]) -> str:
    """``text`` with each changed slot's line rewritten (new slots appended at the end)."""
    lines = _lines(text)
    ends_with_newline = text.endswith("\n") or not text
    if ends_with_newline and lines and lines[-1] == "":
        lines.pop()
    for slot in sorted(slots, key=lambda slot: slot.line):
        if not slot.changed:
            continue
        if slot.line < len(lines):
            lines[slot.line] = slot.render()
        else:
            lines.append(slot.render())
    result = "\n".join(lines)
    return result + "\n" if ends_with_newline and result else result
