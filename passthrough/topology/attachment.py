"""Which root ports are the CPU's own and which lead through the chipset: a guess, said as one.

A GPU for a VM belongs on a root port of the CPU: the chipset shares one uplink (DMI on
Intel, four lanes on AMD) among everything behind it. The kernel does not report which
is which, so this module guesses from addresses and ids, and every answer carries the
words of its evidence:

- the chipset's LPC/ISA bridge (class 0601) in a root port's subtree puts that subtree
  behind the chipset, whatever the vendor;
- Intel's chipset (the PCH) has its root ports at 00:1a to 00:1d (00:1c.x, 00:1d.x,
  00:1b.x; 00:1a.x on 600-series and later) and, on older ones (ICH), its bridge to
  conventional PCI at 00:1e.0; the CPU's are 00:01.x and 00:06.0;
- an AMD chipset (300 to 600 series, X570) hangs below a GPP bridge of the CPU as a
  switch of AMD ids (``Matisse Switch Upstream`` 1022:57ad, ``500 Series Chipset Switch
  Upstream Port`` 1022:43e9, ...). A Radeon card's own switch is ATI's (1002) and does not
  count; neither does the AMD-made bridge of a Vega card, whose name says no chipset.

Any other root port of an Intel or AMD root complex is taken as the CPU's. Root ports of
other vendors (QEMU, Ampere, ...) are left unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from passthrough.errors import InvalidAddress
from passthrough.pci.address import PciAddress
from passthrough.pci.model import PciFunction

INTEL, AMD = "8086", "1022"
INTEL_PCH_ROOT_PORT_SLOTS = (0x1A, 0x1B, 0x1C, 0x1D)
INTEL_PCH_PCI_BRIDGE_SLOT = 0x1E  # the chipset's bridge to conventional PCI ("82801 PCI Bridge", 8086:244e)
# AMD's chipset functions whose pci.ids name does not say "Chipset" (X570, 600 series).
AMD_CHIPSET_DEVICE_IDS = frozenset({"57ad", "57a3", "57a4", "43f4", "43f5"})


@dataclass(frozen=True)
class Attachment:
    where: Literal["cpu", "chipset"]
    reason: str  # why we think so, in words; always a guess

    @property
    def label(self) -> str:
        return "CPU root port (guess)" if self.where == "cpu" else "behind the chipset (guess)"


def _short(address: str) -> str:
    return address[5:] if address.startswith("0000:") else address


def _bus_and_slot(address: str) -> tuple[int | None, int | None]:
    try:
        parsed = PciAddress.parse(address)
    except InvalidAddress:  # a crafted capture: guess nothing from it
        return None, None
    return parsed.bus, parsed.slot


def _is_amd_chipset(function: PciFunction) -> bool:
    if function.vendor_id != AMD:
        return False
    return function.device_id in AMD_CHIPSET_DEVICE_IDS or "chipset" in (function.device_name or "").lower()


def attachment(root_port: PciFunction, below: list[PciFunction]) -> Attachment | None:
    """Where the root port ``root_port`` (a bridge on a root bus) and ``below`` (its subtree) attach."""
    for function in below:
        if (function.class_code or "").startswith("0601"):
            return Attachment("chipset", f"the chipset's LPC/ISA bridge {_short(function.address)} is below it")
    if root_port.vendor_id == INTEL:
        bus, slot = _bus_and_slot(root_port.address)
        if bus == 0 and slot == INTEL_PCH_PCI_BRIDGE_SLOT:
            return Attachment(
                "chipset", f"{_short(root_port.address)} is the bridge to conventional PCI in Intel's chipset (00:1e)"
            )
        if bus == 0 and slot in INTEL_PCH_ROOT_PORT_SLOTS:
            return Attachment(
                "chipset",
                f"{_short(root_port.address)} is where Intel's chipset (PCH) puts its root ports (00:1a to 00:1d)",
            )
        return Attachment(
            "cpu", f"an Intel root port outside the chipset's slots 00:1a to 00:1d ({_short(root_port.address)})"
        )
    if root_port.vendor_id == AMD:
        for function in below:
            if _is_amd_chipset(function):
                name = function.device_name or f"{function.vendor_id}:{function.device_id}"
                return Attachment(
                    "chipset", f"AMD's chipset ({name}, {_short(function.address)}) hangs below this CPU bridge"
                )
        return Attachment("cpu", "an AMD CPU bridge with no chipset switch below it")
    return None
