"""Vendor, device, subsystem and class names from pci.ids.

The system's file (``/usr/share/misc/pci.ids`` on Debian, ``/usr/share/hwdata/pci.ids``
on Fedora and Arch) is preferred because the user's lspci prints the same names; a copy
shipped in ``passthrough/data`` (beside this package, not in it) is the fallback.

pci.ids is 1.3 MB, sorted by vendor, with device lines indented one tab and subsystem
lines two, then a class section whose lines start with ``C``. Nothing is parsed up front:
the first lookup indexes where each vendor's block starts (one regular-expression pass,
~3 ms), and each later lookup searches only its vendor's block with ``bytes.find``.
Results are memoised, so a host pays for the few dozen ids it has and nothing else.
"""

from __future__ import annotations

import bisect
import os
import re
from functools import lru_cache

SYSTEM_PATHS = (
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
    "/usr/local/share/pci.ids",
)
SHIPPED_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "pci.ids.gz")

# Vendor lines are the only lines that start with four hex digits and two spaces.
_VENDOR_LINE = re.compile(rb"\n([0-9a-f]{4})  ")


class PciIds:
    def __init__(self, data: bytes, source: str) -> None:
        # The leading newline makes every line, the first included, start after "\n".
        self._data = b"\n" + data
        self.source = source
        self._index: dict[str, int] | None = None
        self._offsets: list[int] = []
        self._class_start = len(self._data)
        self._names: dict[tuple[str, ...], str | None] = {}
        self._classes: dict[str, str] | None = None

    @classmethod
    def from_file(cls, path: str) -> PciIds:
        if path.endswith(".gz"):
            import gzip  # only the fallback copy is compressed

            with gzip.open(path, "rb") as handle:
                return cls(handle.read(), path)
        with open(path, "rb") as handle:
            return cls(handle.read(), path)

    def _vendor_index(self) -> dict[str, int]:
        if self._index is None:
            class_start = self._data.find(b"\nC ")
            if class_start >= 0:
                self._class_start = class_start
            self._index = {
                match.group(1).decode(): match.start()
                for match in _VENDOR_LINE.finditer(self._data, 0, self._class_start)
            }
            self._offsets = sorted(self._index.values())
        return self._index

    def _vendor_span(self, vendor: str) -> tuple[int, int] | None:
        start = self._vendor_index().get(vendor)
        if start is None:
            return None
        position = bisect.bisect_right(self._offsets, start)
        end = self._offsets[position] if position < len(self._offsets) else self._class_start
        return start, end

    def _name_after(self, key: bytes, start: int, end: int) -> tuple[str | None, int]:
        """Name on the line that begins with ``key`` inside [start, end), and where it is."""
        at = self._data.find(key, start, end)
        if at < 0:
            return None, -1
        line_end = self._data.find(b"\n", at + len(key), end)
        name = self._data[at + len(key) : line_end if line_end >= 0 else end]
        return name.decode("utf-8", "replace").strip(), at

    def _device_span(self, vendor: str, device: str) -> tuple[str | None, int, int]:
        span = self._vendor_span(vendor)
        if span is None:
            return None, -1, -1
        name, at = self._name_after(b"\n\t" + device.encode() + b"  ", span[0], span[1])
        if at < 0:
            return None, -1, -1
        # Its subsystem lines (two tabs) run until the next device line (one tab).
        following = self._data.find(b"\n\t", at + 2, span[1])
        while following >= 0 and self._data[following + 2 : following + 3] == b"\t":
            following = self._data.find(b"\n\t", following + 3, span[1])
        return name, at, following if following >= 0 else span[1]

    def vendor(self, vendor: str | None) -> str | None:
        if not vendor:
            return None
        key = ("v", vendor.lower())
        if key not in self._names:
            span = self._vendor_span(key[1])
            self._names[key] = self._name_after(b"\n" + key[1].encode() + b"  ", span[0], span[1])[0] if span else None
        return self._names[key]

    def device(self, vendor: str | None, device: str | None) -> str | None:
        if not vendor or not device:
            return None
        key = ("d", vendor.lower(), device.lower())
        if key not in self._names:
            self._names[key] = self._device_span(key[1], key[2])[0]
        return self._names[key]

    def subsystem(
        self, vendor: str | None, device: str | None, sub_vendor: str | None, sub_device: str | None
    ) -> str | None:
        if not (vendor and device and sub_vendor and sub_device):
            return None
        key = ("s", vendor.lower(), device.lower(), sub_vendor.lower(), sub_device.lower())
        if key not in self._names:
            _, start, end = self._device_span(key[1], key[2])
            line = b"\n\t\t" + key[3].encode() + b" " + key[4].encode() + b"  "
            self._names[key] = self._name_after(line, start, end)[0] if start >= 0 else None
        return self._names[key]

    def class_name(self, class_code: str | None) -> str | None:
        """Name of a 6-digit class code as lspci prints it: the subclass, else the class."""
        if not class_code or len(class_code) < 4:
            return None
        classes = self._class_table()
        code = class_code.lower()
        return classes.get(code[:4]) or classes.get(code[:2])

    def class_table(self) -> dict[str, str]:
        """Class and subclass names by code: ``"03"`` -> Display controller, ``"0300"`` -> VGA compatible controller."""
        return dict(self._class_table())

    def _class_table(self) -> dict[str, str]:
        if self._classes is None:
            self._vendor_index()
            table: dict[str, str] = {}
            base = ""
            for line in self._data[self._class_start :].decode("utf-8", "replace").split("\n"):
                if line.startswith("C "):
                    base = line[2:4]
                    table[base] = line[6:].strip()
                elif line.startswith("\t") and not line.startswith("\t\t") and base:
                    table[base + line[1:3]] = line[5:].strip()
            self._classes = table
        return self._classes


@lru_cache(maxsize=1)
def load() -> PciIds:
    """The system's pci.ids if there is one, else the shipped copy."""
    override = os.environ.get("PASSTHROUGH_PCI_IDS")
    candidates = ([override] if override else []) + list(SYSTEM_PATHS)
    for path in candidates:
        if os.path.isfile(path):
            return PciIds.from_file(path)
    return PciIds.from_file(SHIPPED_PATH)
