"""Which NUMA node a VM's vCPUs and memory are pinned to: the devices' own, none, or one the user names.

On a host with several nodes (a two-socket workstation, a Threadripper in NUMA mode)
:func:`pinning` answers for ``build_spec``: ``"auto"`` takes the node the passed devices
sit on (:func:`~passthrough.topology.placement.numa_choice`, or none when they disagree),
``"off"`` pins nothing, and a node number pins there, checked against the host's nodes,
with a warning when the devices sit elsewhere (their DMA and interrupts then cross
between the sockets). The QEMU, libvirt and Proxmox generators word the pinning through
:func:`node_reason`.

Imports: errors, topology.placement and topology.layout; spec only for its type.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from passthrough.configgen.errors import ConfigError
from passthrough.topology.layout import short_address
from passthrough.topology.placement import cpulist_text, numa_choice, parse_cpulist

if TYPE_CHECKING:
    from passthrough.configgen.spec import VmSpec
    from passthrough.pci.model import Inventory

AUTO: Final = "auto"
OFF: Final = "off"
NumaPin = Literal["auto", "off"] | int  # a node number pins there
PINNING_TARGETS = ("qemu", "libvirt", "proxmox")  # the VMware and Hyper-V configs pin nothing
OFF_WHY = (
    "NUMA pinning is turned off (you chose off): the VM's vCPUs and memory go wherever the host's scheduler puts "
    "them, which may be a node away from the passed devices."
)
_NODE = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Pinning:
    node: int | None  # None: not pinned
    cpus: str | None  # the node's CPUs, in the kernel's short form
    why: str | None  # which node and why, or why none; None on a one-node host left on auto
    warning: str | None = None  # a chosen node the devices are not known to sit on: what it costs


def parse_numa_pin(value: NumaPin | str | bool) -> NumaPin:
    """``"auto"``, ``"off"`` or a node number, as typed on a command line or sent by a form.

    ``True`` and ``False`` (the old ``numa_pin`` switch) mean auto and off: never node 1 and node 0.
    """
    if isinstance(value, bool):
        return AUTO if value else OFF
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(
                f"NUMA node {value} is not a node number.", hint="Nodes are numbered from 0; or give auto or off."
            )
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word == AUTO:
            return AUTO
        if word == OFF:
            return OFF
        if _NODE.fullmatch(word):
            return int(word)
    raise ConfigError(
        f"{value!r} is not a NUMA pinning choice.",
        hint="Give auto (the node of the passed devices), off (no pinning), or a node number such as 1.",
    )


def pinning(inventory: Inventory, addresses: list[str], choice: NumaPin | str | bool) -> Pinning:
    """Where a VM with the functions at ``addresses`` is pinned for ``choice``; ConfigError for a node the host lacks."""
    pin = parse_numa_pin(choice)
    if pin == OFF:
        return Pinning(None, None, OFF_WHY)
    if pin == AUTO:
        if len(inventory.numa_nodes) < 2:
            return Pinning(None, None, None)
        found = numa_choice(inventory, addresses)
        return Pinning(found.node, found.cpus, found.why)
    assert isinstance(pin, int)
    return _chosen(inventory, addresses, pin)


def _chosen(inventory: Inventory, addresses: list[str], node: int) -> Pinning:
    nodes = inventory.numa_nodes
    listed = ", ".join(str(number) for number in sorted(nodes))
    if not nodes:
        raise ConfigError(
            f"NUMA node {node} cannot be checked: this host's NUMA nodes were not read "
            "(no sys/devices/system/node in the tree, or a snapshot older than the node lists).",
            hint="Scan the host again, or choose auto or off.",
        )
    if node not in nodes:
        raise ConfigError(
            f"NUMA node {node} is not one of this host's nodes ({listed}).",
            hint=f"Choose one of {listed}, or auto (the node of the passed devices), or off; "
            "a node without CPUs (memory only) is not listed, as nothing can run there.",
        )
    try:
        cpus = cpulist_text(parse_cpulist(nodes[node]))
    except ValueError:
        raise ConfigError(
            f"The CPU list of NUMA node {node} cannot be read ({nodes[node]!r}), so nothing can be pinned there.",
            hint=f"Choose another of {listed}, or auto, or off.",
        ) from None
    located = {address: inventory.require(address).numa_node for address in addresses}
    here = [short_address(address) for address, at in located.items() if at == node]
    unknown = [short_address(address) for address, at in located.items() if at is None]
    elsewhere = {address: at for address, at in located.items() if at is not None and at != node}
    why = f"You chose NUMA node {node} of {len(nodes)} (CPUs {cpus})"
    if here:
        why += f"; {', '.join(here)} sit{'s' if len(here) == 1 else ''} there"
    if unknown:
        why += f"; {', '.join(unknown)} report{'s' if len(unknown) == 1 else ''} no node"
    return Pinning(node, cpus, why + ".", _warning(node, elsewhere, here, unknown))


def _warning(node: int, elsewhere: dict[str, int], here: list[str], unknown: list[str]) -> str | None:
    if elsewhere:
        where = "; ".join(
            f"{', '.join(short_address(a) for a, at in elsewhere.items() if at == other)} on node {other}"
            for other in sorted(set(elsewhere.values()))
        )
        own = sorted(set(elsewhere.values()))
        better = f" Choose automatic (node {own[0]}) to keep them together." if len(own) == 1 and not here else ""
        return (
            f"Not the devices' node: {where}. Their DMA to the VM's memory and their interrupts to its vCPUs "
            f"cross from that node to node {node} over the link between the sockets (UPI/QPI on Intel, Infinity "
            "Fabric on AMD), which adds latency and shares that link's bandwidth with everything else crossing "
            f"it.{better}"
        )
    if unknown and not here:
        one = len(unknown) == 1
        return (
            f"The firmware gives no NUMA node for {', '.join(unknown)}, so whether node {node} is near "
            f"{'it' if one else 'them'} is not known; if it is not, {'its' if one else 'their'} DMA and interrupts "
            "cross between the sockets."
        )
    return None


def node_reason(spec: VmSpec) -> str:
    """The end of a generator's note on pinning: why this node, and what it costs when it is not the devices'."""
    if spec.numa_warning:
        return f"the node chosen for it: {spec.numa_why or ''} {spec.numa_warning}"
    return f"where the passed devices are: {spec.numa_why or ''} Their DMA and interrupts then stay on one node."


def warning_lines(spec: VmSpec) -> list[str]:
    """The warning for the top of the generated file, wrapped for a terminal; empty when there is none."""
    if not spec.numa_warning:
        return []
    return textwrap.wrap(f"NUMA WARNING: pinned to node {spec.numa_node} as asked. {spec.numa_warning}", width=96)
