"""A planned edit of one configuration file: its text before and after.

Plans are pure values: readiness shows them as fixes, and the persistence job that
applies them later can check that the file still reads ``before`` before writing ``after``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FileEdit:
    path: str  # host path, "/etc/default/grub"
    before: str | None  # None: the file does not exist yet
    after: str

    @property
    def changed(self) -> bool:
        return (self.before or "") != self.after

    @property
    def creates(self) -> bool:
        return self.before is None

    def _opcodes(self) -> list[tuple[str, list[str], list[str]]]:
        old = (self.before or "").splitlines()
        new = self.after.splitlines()
        return [
            (tag, old[old_start:old_end], new[new_start:new_end])
            for tag, old_start, old_end, new_start, new_end in difflib.SequenceMatcher(a=old, b=new).get_opcodes()
            if tag != "equal"
        ]

    def changed_lines(self) -> list[tuple[str | None, str | None]]:
        """(old line, new line) pairs; None on one side for an added or removed line."""
        pairs: list[tuple[str | None, str | None]] = []
        for _, removed, added in self._opcodes():
            for index in range(max(len(removed), len(added))):
                pairs.append(
                    (removed[index] if index < len(removed) else None, added[index] if index < len(added) else None)
                )
        return pairs

    def describe(self) -> str:
        """The change in words a user can follow by hand."""
        if not self.changed:
            return f"{self.path} already has what is needed."
        if self.creates:
            return f"Create {self.path} containing:\n" + _indent(self.after.rstrip("\n"))
        parts = []
        for tag, removed, added in self._opcodes():
            if tag == "replace":
                parts.append(f"change\n{_indent(removed)}\nto\n{_indent(added)}")
            elif tag == "insert":
                parts.append(f"add {_the_lines(added)}\n{_indent(added)}")
            else:
                parts.append(f"delete {_the_lines(removed)}\n{_indent(removed)}")
        return f"In {self.path} " + "\nand ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "before": self.before,
            "after": self.after,
            "changed_lines": [{"before": old, "after": new} for old, new in self.changed_lines()],
        }


def _indent(lines: str | list[str]) -> str:
    return "\n".join(f"    {line}" for line in (lines.splitlines() if isinstance(lines, str) else lines))


def _the_lines(lines: list[str]) -> str:
    return "the line" if len(lines) == 1 else "the lines"
