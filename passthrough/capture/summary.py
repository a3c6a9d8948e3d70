"""What a capture recorded: the summary written as ``capture.json`` and returned to the caller.

It sits below the recorders (:mod:`passthrough.capture.recorder` and the areas built on
it count files, links and skipped paths into it) and :mod:`passthrough.capture.run`,
which fills in the rest and writes it out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NEVER_RECORDED = (
    "BAR files (resourceN), expansion ROMs, VPD, pcie_bw, serial_number and unique_id of PCI functions; "
    "efivar contents (names only) except systemd-boot's LoaderInfo (the loader's name and version); "
    "write-only attributes other than reset and driver_override (recorded empty); "
    "anything outside the lists in passthrough/capture/sysfs.py and passthrough/capture/files.py"
)


@dataclass
class SkippedPath:
    path: str
    reason: str


@dataclass
class CaptureSummary:
    dest: str
    source: str
    captured_at: str
    hostname: str | None = None
    kernel: str | None = None
    tool_version: str | None = None
    privileged: bool = False  # ran as root: full config space, /boot/efi and dmesg were readable
    functions: int = 0
    groups: int = 0
    files: int = 0
    links: int = 0
    skipped: list[SkippedPath] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(SkippedPath(path, reason))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = "passthrough-wizard host tree"
        data["tool"] = "passthrough-wizard"
        data["never_recorded"] = NEVER_RECORDED
        return data
