"""Where a function sits: behind a CPU root port or the chipset, its link against its maximum, its NUMA node.

A card for a VM wants a root port of the CPU (the chipset shares one uplink among
everything behind it), a link trained as fast and as wide as both ends allow, and the
VM's vCPUs and memory on the NUMA node the card hangs off. :func:`placement` says all
three for one function, in words; :func:`numa_choice` picks the node a VM with a set of
functions should be pinned to, or says why none. Node CPU lists come from the inventory
(``sys/devices/system/node/nodeN/cpulist``, read by the scan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from passthrough.pci.model import Inventory, PciFunction
from passthrough.topology.attachment import Attachment, attachment
from passthrough.topology.layout import Link, gts, link_of, short_address

CHIPSET_UPLINK = (
    "everything behind the chipset shares its one uplink to the CPU (DMI on Intel, four PCIe lanes on AMD), "
    "so a card there runs slower and its IOMMU group often holds the chipset's other devices"
)


def parse_cpulist(text: str) -> list[int]:
    """``"0-3,8,10-11"`` -> ``[0, 1, 2, 3, 8, 10, 11]``; ValueError for anything else."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list")
        low, high = int(first), int(last) if dash else int(first)
        if high < low or high >= 1 << 16:
            raise ValueError(f"{text!r} is not a CPU list")
        cpus.update(range(low, high + 1))
    return sorted(cpus)


def cpulist_text(cpus: list[int]) -> str:
    """The kernel's short form of a set of CPUs: ``[0, 1, 2, 3, 8]`` -> ``"0-3,8"``."""
    ranges: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


@dataclass(frozen=True)
class Placement:
    address: str
    root_port: str | None  # the root port it hangs under; None: on a root bus itself
    attachment: Attachment | None  # the guess for that root port
    link: Link | None  # the link of the function, or of the nearest bridge whose link is below its best
    link_of: str | None  # whose link ``link`` is
    downgraded: bool  # trained slower or narrower than both ends of that link can run
    numa_node: int | None
    node_cpus: str | None  # the node's CPUs, when the host has several nodes and lists them
    words: list[str]  # where, link, NUMA: one sentence each

    def to_json(self) -> dict[str, Any]:
        link = self.link
        return {
            "address": self.address,
            "root_port": self.root_port,
            "attachment": None
            if self.attachment is None
            else {"where": self.attachment.where, "reason": self.attachment.reason},
            "link": None
            if link is None
            else {"speed": link.speed, "width": link.width, "max_speed": link.max_speed, "max_width": link.max_width},
            "link_of": self.link_of,
            "downgraded": self.downgraded,
            "numa_node": self.numa_node,
            "node_cpus": self.node_cpus,
            "words": list(self.words),
        }


def placement(inventory: Inventory, address: str) -> Placement:
    function = inventory.require(address)
    root_port, guess, where = _where(inventory, function)
    link, link_owner, downgraded, link_words = _link(inventory, function)
    cpus, numa_words = _numa(inventory, function)
    return Placement(
        address=function.address,
        root_port=root_port,
        attachment=guess,
        link=link,
        link_of=link_owner,
        downgraded=downgraded,
        numa_node=function.numa_node,
        node_cpus=cpus,
        words=[where, link_words, numa_words],
    )


def placements(inventory: Inventory) -> list[Placement]:
    """One per function a VM could take: every endpoint, bridges and host bridges left out."""
    return [
        placement(inventory, function.address)
        for function in inventory.devices
        if not function.is_bridge and not function.is_host_bridge
    ]


def _where(inventory: Inventory, function: PciFunction) -> tuple[str | None, Attachment | None, str]:
    root_port = function.root_port
    port = inventory.device(root_port) if root_port else None
    if port is None:
        return (
            None,
            None,
            (
                "On a root bus itself, not behind a root port: built into the processor or the chipset, "
                "with no slot and no link of its own."
            ),
        )
    below = [other for other in inventory.devices if root_port in other.bridges]
    guess = attachment(port, below)
    name = short_address(port.address)
    if guess is None:
        return (
            root_port,
            None,
            (
                f"Behind root port {name} ({port.label}), whose vendor gives no clue whether it is the CPU's or the "
                "chipset's."
            ),
        )
    if guess.where == "cpu":
        return root_port, guess, f"Behind a CPU root port, {name} (a guess: {guess.reason})."
    return root_port, guess, f"Behind the chipset, root port {name} (a guess: {guess.reason}); {CHIPSET_UPLINK}."


def _link(inventory: Inventory, function: PciFunction) -> tuple[Link | None, str | None, bool, str]:
    """The function's own link, unless a link further up (a card's own switch) trained lower."""
    own = link_of(function)
    path = [function] + [bridge for bridge in map(inventory.device, function.bridges[:-1]) if bridge is not None]
    for holder in path:
        link = link_of(holder)
        if link is None:
            continue
        port = inventory.device(holder.parent) if holder.parent else None
        words = _link_words(link, link_of(port) if port else None, holder is function, holder)
        if words is not None:
            return link, holder.address, True, words
    if own is None:
        return None, None, False, "Link speed and width are not reported (conventional PCI, or not in this snapshot)."
    port = inventory.device(function.parent) if function.parent else None
    return own, function.address, False, _full_words(own, link_of(port) if port else None)


def _limits(link: Link, port: Link | None) -> tuple[float | None, int | None]:
    """The fastest speed and widest width both ends can do: the device's maximum, capped by the port's."""
    speed, width = gts(link.max_speed), link.max_width
    if port is not None:
        port_speed = gts(port.max_speed)
        if port_speed is not None and (speed is None or port_speed < speed):
            speed = port_speed
        if port.max_width is not None and (width is None or port.max_width < width):
            width = port.max_width
    return speed, width


def _link_words(link: Link, port: Link | None, own: bool, holder: PciFunction) -> str | None:
    """Words for a link trained below what both ends can do; None when it is not."""
    best_speed, best_width = _limits(link, port)
    now_speed = gts(link.speed)
    narrower = link.width is not None and best_width is not None and link.width < best_width
    slower = now_speed is not None and best_speed is not None and now_speed < best_speed
    if not (narrower or slower):
        return None
    whose = "Its link" if own else f"The link of {short_address(holder.address)} above it ({holder.label})"
    parts = []
    if narrower:
        parts.append(
            f"{whose} is downgraded to x{link.width} of the x{best_width} both ends can do: fewer lanes trained than "
            "slot and card offer (a card not fully seated, a dirty contact or riser, or a slot whose lanes the "
            "firmware shares with another slot or an M.2 socket)."
        )
    if slower:
        speed_words = f"runs at {link.speed} of the {_speed_text(best_speed)} both ends can do"
        parts.append(
            (f"{whose} {speed_words}" if not narrower else f"It also {speed_words}")
            + ": GPUs and NICs lower the speed while idle to save power; if it stays low under load, the "
            "firmware's PCIe generation setting, a riser or the seating holds it back."
        )
    return " ".join(parts)


def _full_words(link: Link, port: Link | None) -> str:
    if gts(link.max_speed) is None and link.max_width is None:
        return f"Link {link.text}; its maximum is not reported, so whether it could run faster is not known."
    text = f"Link {link.text}, as fast and as wide as both ends can do."
    if port is None:
        return text
    card_speed, port_speed = gts(link.max_speed), gts(port.max_speed)
    slot_slower = card_speed is not None and port_speed is not None and port_speed < card_speed
    slot_narrower = link.max_width is not None and port.max_width is not None and port.max_width < link.max_width
    if slot_slower or slot_narrower:
        text += (
            f" The card could do {link.max_text}, but the port above it at most {port.max_text}: "
            "the slot limits it, not the card."
        )
    return text


def _speed_text(speed: float | None) -> str:
    return "?" if speed is None else f"{speed:.1f} GT/s"


def _numa(inventory: Inventory, function: PciFunction) -> tuple[str | None, str]:
    nodes = inventory.numa_nodes
    node = function.numa_node
    if len(nodes) > 1:
        if node is None:
            return None, (
                f"The firmware gives no NUMA node for it on a host with {len(nodes)} nodes, so a VM cannot be "
                "pinned near it."
            )
        if node not in nodes:
            return None, f"NUMA node {node}, which has no CPUs of its own to pin a VM to."
        try:
            cpus = cpulist_text(parse_cpulist(nodes[node]))
        except ValueError:
            return None, f"NUMA node {node}, whose CPU list cannot be read, so a VM cannot be pinned there."
        return cpus, (
            f"NUMA node {node} of {len(nodes)} (CPUs {cpus}): the generated configs pin the VM's vCPUs and "
            "memory there, so its DMA and interrupts stay on one node."
        )
    if node is None:
        return None, "No NUMA node given by the firmware (one node, or no locality reported)."
    if len(nodes) == 1:
        return None, f"NUMA node {node}, the host's only node: nothing to pin."
    return None, f"NUMA node {node} (the host's node CPU lists were not read)."


@dataclass(frozen=True)
class NumaChoice:
    """The node a VM with these functions is pinned to (``node`` None: not pinned, ``why`` says why)."""

    node: int | None
    cpus: str | None  # the node's CPUs, in the kernel's short form
    why: str


def numa_choice(inventory: Inventory, addresses: list[str]) -> NumaChoice:
    nodes = inventory.numa_nodes
    if len(nodes) < 2:
        return NumaChoice(None, None, "The host has one NUMA node (or its node CPU lists were not read): no pinning.")
    located = {address: inventory.require(address).numa_node for address in addresses}
    known = sorted({node for node in located.values() if node is not None})
    unknown = [short_address(address) for address, node in located.items() if node is None]
    if not known:
        return NumaChoice(
            None,
            None,
            f"The firmware gives no NUMA node for {', '.join(unknown)} on a host with {len(nodes)} nodes: not pinned.",
        )
    if len(known) > 1:
        where = "; ".join(
            f"node {node}: " + ", ".join(short_address(a) for a, n in located.items() if n == node) for node in known
        )
        return NumaChoice(
            None,
            None,
            f"The devices sit on different NUMA nodes ({where}); pinning to one leaves the others remote: not pinned.",
        )
    node = known[0]
    try:
        cpus = cpulist_text(parse_cpulist(nodes.get(node, "")))
    except ValueError:
        return NumaChoice(None, None, f"NUMA node {node} lists no usable CPUs: not pinned.")
    why = (
        f"{', '.join(short_address(a) for a, n in located.items() if n == node)} sit"
        f"{'s' if len(located) - len(unknown) == 1 else ''} on NUMA node {node} of {len(nodes)} (CPUs {cpus})"
    )
    if unknown:
        why += f"; {', '.join(unknown)} report{'s' if len(unknown) == 1 else ''} no node"
    return NumaChoice(node, cpus, why + ".")
