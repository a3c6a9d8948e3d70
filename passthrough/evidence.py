"""Evidence: one fact a check or a detector actually read, and where.

Readiness checks and boot-configuration detection both answer "why do you think so?"
with a list of these, so a user can open the same file and see the same value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Evidence:
    path: str  # the path on the host ("/proc/cmdline"), or "dmesg" for the kernel log
    value: str  # what was read there, verbatim or trimmed to the relevant part

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "value": self.value}


def host_path(relative: str) -> str:
    """``proc/cmdline`` -> ``/proc/cmdline``: a captured tree mirrors the host, so show host paths."""
    return "/" + relative.lstrip("/")
