"""Which PCIe root port of a q35 domain a card goes on, and which root ports a detach takes away.

Every root port is a PCI bus the guest enumerates, and q35 has room for few, so attach and
detach cycles must leave the topology as they found it. The rules a careful admin keeps:

* An attach puts each card on a ``pcie-root-port`` nothing sits on (no device's
  ``<address type='pci' bus=...>`` points at its index), lowest index first; in a running
  domain the port must also take a hot-plug (hotplug not off) and be free in the running VM.
  Only when no port is free does it add one, marked as the wizard's with a user alias
  naming the card's first function (``<alias name='ua-passthrough-0000-43-00-0'/>``):
  libvirt keeps a ``ua-`` alias in the saved configuration and QEMU takes it as the port's
  id, so the mark lasts as long as the port, whichever job, shell or undo comes later.
* A detach removes a root port only when its mark says the attach of a function that leaves
  now added it, and nothing else sits on it, in the configuration or in the running VM;
  otherwise the port stays (a free port is where the next attach goes) and the plan says why.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from itertools import count
from typing import Any

from passthrough.pci.address import PciAddress
from passthrough.vms.domainxml import Domain, PciController, hostdev_words

MARK = "ua-passthrough-"
_MARKED = re.compile(r"^ua-passthrough-([0-9a-f]{4,8})-([0-9a-f]{2})-([0-9a-f]{2})-([0-7])(?:-[0-9]+)?$")


def mark(address: str, taken: set[str]) -> str:
    """The alias of a root port the attach of ``address`` adds; ``-2``, ``-3``… when one has it already."""
    base = MARK + address.replace(":", "-").replace(".", "-")
    return base if base not in taken else next(f"{base}-{n}" for n in count(2) if f"{base}-{n}" not in taken)


def added_for(port: PciController) -> str | None:
    """The host function whose attach added this root port (its mark), or None: the wizard did not add it."""
    found = _MARKED.match(port.alias or "")
    return f"{found[1]}:{found[2]}:{found[3]}.{found[4]}" if found else None


def port_name(port: PciController) -> str:
    """The port as libvirt names it in a running VM (``pci.3``), or by its user alias."""
    return port.alias or f"pci.{port.index}"


def free_ports(
    saved: Domain, *, running: bool, live_buses: set[int] | frozenset[int] = frozenset()
) -> list[PciController]:
    """The root ports an attach may put a card on, lowest index first.

    Empty in the saved configuration; for a running domain also hot-pluggable, with no device
    of the running VM on its bus (``live_buses``)."""
    return [port for port in saved.empty_root_ports() if not running or (port.hotplug and port.index not in live_buses)]


def live_buses(live: Domain) -> set[int]:
    """The buses a running VM has a device on (from its live XML)."""
    return {bus for bus, _ in live.occupied}


@dataclass(frozen=True)
class PortUse:
    """The root port one card goes on in an attach."""

    index: int
    name: str  # pci.3, or the alias of the port the attach adds
    added: bool  # True: the attach adds it; False: it was there, free
    devices: tuple[str, ...]  # the card's host functions

    def words(self) -> str:
        who = ", ".join(self.devices)
        if self.added:
            return f"{who} adds a pcie-root-port ({self.name}, index {self.index}): no root port is free"
        return f"{who} uses the free root port {self.name}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "devices": list(self.devices)}


@dataclass(frozen=True)
class PortFate:
    """What a detach does with a root port a leaving function sat on."""

    index: int
    name: str
    removed: bool
    reason: str

    def words(self) -> str:
        return f"{'removes' if self.removed else 'leaves'} the root port {self.name}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def after_detach(
    saved: Domain, leaving: list[str], live: Domain | None, card: list[str] | None = None
) -> list[PortFate]:
    """For each root port a function of ``leaving`` sits on in the configuration: removed, or left and why.

    ``card``: every function going with them (a card's other functions, which may stay in the
    running VM until it stops); what else sits on the port counts against removing it."""
    going = {hostdev_words(address) for address in [*leaving, *(card or [])]}
    buses = sorted({PciAddress.parse(h.guest).bus for h in saved.hostdevs if h.host in leaving and h.guest})
    fates = []
    for bus in buses:
        port = saved.controller(bus)
        if port is None or port.model != "pcie-root-port":
            continue
        owner, name = added_for(port), port_name(port)
        others = [what for what in saved.occupants.get(bus, []) if what not in going]
        in_vm = [what for what in (live.occupants.get(bus, []) if live else []) if what not in going]
        if owner is None:
            reason = (
                f"it has no {MARK}… alias, so no attach of the wizard's added it; it stays, free for the next device"
            )
        elif owner not in leaving:
            reason = f"the wizard added it for {owner}, which does not leave now"
        elif others:
            reason = (
                f"the attach of {owner} added it, but {', '.join(others)} sit{'s' if len(others) == 1 else ''} on it"
            )
        elif in_vm:
            reason = f"the attach of {owner} added it, but the running VM has {', '.join(in_vm)} on it"
        else:
            fates.append(PortFate(bus, name, True, f"the attach of {owner} added it and nothing else sits on it"))
            continue
        fates.append(PortFate(bus, name, False, reason))
    return fates
