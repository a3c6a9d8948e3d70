"""PCI function addresses: ``dddd:bb:ss.f``.

Domains are usually ``0000`` but Intel VMD and some hypervisors create wider ones
(``10000:00:04.0``), so the domain is 4 to 8 hex digits. :func:`function_of` finds the
function a sysfs entry (a disk, a network interface, a framebuffer) sits on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from passthrough.errors import InvalidAddress
from passthrough.host import HostTree

_HINT = "Write it as domain:bus:slot.function in hex, for example 0000:01:00.0."
_FULL = re.compile(r"^(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


@dataclass(frozen=True, order=True)
class PciAddress:
    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, text: str, *, require_domain: bool = False) -> PciAddress:
        """Parse ``0000:01:00.0`` (or ``01:00.0`` unless ``require_domain``)."""
        if not isinstance(text, str):
            raise InvalidAddress(f"A PCI address must be text, not {type(text).__name__}.")
        match = _FULL.match(text.strip())
        shown = text if len(text) <= 40 else text[:40] + "…"
        if not match or (require_domain and match.group(1) is None):
            raise InvalidAddress(f"{shown!r} is not a PCI address.", hint=_HINT)
        domain, bus, slot, function = match.groups()
        slot_number = int(slot, 16)
        if slot_number > 0x1F:
            raise InvalidAddress(f"{shown!r} has slot {slot}, but PCI slots run from 00 to 1f.", hint=_HINT)
        return cls(int(domain or "0", 16), int(bus, 16), slot_number, int(function))

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function}"

    @property
    def short(self) -> str:
        """``bb:ss.f``, the form lspci and most guides print."""
        return f"{self.bus:02x}:{self.slot:02x}.{self.function}"

    @property
    def slot_key(self) -> tuple[int, int, int]:
        """Functions sharing this key are one physical device (a GPU and its audio)."""
        return (self.domain, self.bus, self.slot)


def normalize(text: str) -> str:
    """Canonical full form of an address, or :class:`InvalidAddress`."""
    return str(PciAddress.parse(text))


def is_address(name: str) -> bool:
    """True for a full sysfs function name such as ``0000:01:00.0``."""
    match = _FULL.match(name)
    return match is not None and match.group(1) is not None


def function_of(tree: HostTree, relative: str) -> str | None:
    """The deepest PCI function on the resolved path of sysfs entry ``relative``, or None."""
    if not tree.exists(relative):
        return None
    parts = [part for part in tree.realpath(relative).split("/") if is_address(part)]
    return parts[-1] if parts else None
