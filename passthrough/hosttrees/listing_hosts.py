"""From a pasted listing to a host tree's description: bus topology and the HostSpec.

:func:`build_host_spec` turns a group listing (and, optionally, an lspci listing of the
same host) read by :mod:`passthrough.hosttrees.listings` into a
:class:`~passthrough.hosttrees.spec.HostSpec`, so a pasted listing can be laid out as a
host tree and judged by :func:`passthrough.pci.scan.scan`. Listings never say which
bridge opens which bus; :func:`infer_topology` numbers them as firmware does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from passthrough.errors import InvalidAddress, ListingError
from passthrough.hosttrees.listed import ListedFunction
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.address import PciAddress


@dataclass
class Topology:
    parents: dict[str, str | None]  # function -> the bridge above it; None on a root bus
    secondary_buses: dict[str, int]  # bridge -> the bus it opens
    root_buses: list[tuple[int, int]]  # (domain, bus)


def infer_topology(functions: list[ListedFunction], bus_parents: dict[int, str | None] | None = None) -> Topology:
    """Which bridge each bus hangs under, numbering buses as firmware does.

    Listings name every function by its bus but never say which bridge opens which bus.
    Firmware numbers buses depth first: on each root bus, each bridge in address order
    takes the next free number, and the bridges below it number before its next sibling.
    Emulating that reproduces the real numbering wherever no bridge reserved spare numbers.

    Root buses are the lowest bus of each domain and every bus holding a host bridge
    (a second die's ``40:`` on Threadripper, the per-stack buses of Sapphire Rapids; AMD
    keeps the root complex ``xx:00.0`` itself out of the group listings, so any host bridge
    counts). A bus nothing reaches attaches to the latest bridge whose own bus stayed
    empty below it: a Thunderbolt port reserves numbers for hotplug, so what follows it
    numbers higher than the emulation says. A bus with no such bridge is a root bus.

    Where a source gives the truth it wins: a bridge's ``secondary_bus`` (``lspci -vvv``)
    and ``bus_parents``, ``{bus: bridge address}`` or ``{bus: None}`` for a root bus.
    """
    by_address = {function.address: function for function in functions}
    by_bus: dict[tuple[int, int], list[ListedFunction]] = {}
    for function in sorted(functions, key=lambda item: item.pci_address):
        address = function.pci_address
        by_bus.setdefault((address.domain, address.bus), []).append(function)
    fixed = {function.address: function.secondary_bus for function in functions if function.secondary_bus is not None}
    roots = {min(key for key in by_bus if key[0] == domain) for domain, _ in by_bus}
    roots |= {key for key, members in by_bus.items() if any(member.is_host_bridge for member in members)}
    for bus, bridge in (bus_parents or {}).items():
        if bridge is None:
            roots.add((0, bus))
            continue
        found = by_address.get(_full(bridge))
        if found is None or not found.is_bridge:
            raise ListingError(
                f"bus_parents gives bus {bus:02x} to {bridge}, which the listing does not hold as a PCI bridge."
            )
        fixed[found.address] = bus
    claimed = {(PciAddress.parse(bridge).domain, bus) for bridge, bus in fixed.items()}

    owner: dict[tuple[int, int], str | None] = {}
    secondary: dict[str, int] = {}
    counter: dict[int, int] = {}

    def visit(key: tuple[int, int]) -> None:
        domain = key[0]
        for function in by_bus.get(key, []):
            if not function.is_bridge or function.address in secondary:
                continue
            number = fixed.get(function.address)
            if number is None:
                number = counter.get(domain, -1) + 1
                while (domain, number) in claimed or (domain, number) in roots:
                    number += 1
            counter[domain] = max(counter.get(domain, -1), number)
            secondary[function.address] = number
            if (domain, number) not in owner:
                owner[(domain, number)] = function.address
                visit((domain, number))

    def start_root(key: tuple[int, int]) -> None:
        owner[key] = None
        counter[key[0]] = max(counter.get(key[0], -1), key[1])
        visit(key)

    for key in sorted(roots):
        start_root(key)
    for key in sorted(by_bus):
        if key in owner:
            continue
        empty = [
            bridge
            for bridge, number in secondary.items()
            if bridge not in fixed
            and PciAddress.parse(bridge).domain == key[0]
            and number < key[1]
            and (key[0], number) not in by_bus
        ]
        if not empty:
            start_root(key)
            continue
        latest = max(empty, key=lambda bridge: secondary[bridge])
        owner.pop((key[0], secondary[latest]), None)
        secondary[latest], owner[key] = key[1], latest
        counter[key[0]] = max(counter[key[0]], key[1])
        visit(key)
    parents = {
        function.address: owner.get((function.pci_address.domain, function.pci_address.bus)) for function in functions
    }
    return Topology(parents, secondary, sorted(key for key, bridge in owner.items() if bridge is None))


def merge_lspci(listed: list[ListedFunction], lspci: list[ListedFunction]) -> list[ListedFunction]:
    """The group listing, with driver, subsystem and bus numbers from an lspci of the same host.

    Details merge only where vendor and device ids agree: an lspci taken after a card was
    swapped describes another card. Functions only lspci shows are added without a group.
    """
    details = {function.address: function for function in lspci}
    merged = []
    for function in listed:
        other = details.pop(function.address, None)
        if other is not None and other.ids is not None and other.ids == function.ids:
            function = replace(
                other, **{key: value for key, value in vars(function).items() if value not in (None, [])}
            )
        merged.append(function)
    return sorted(merged + list(details.values()), key=lambda function: function.pci_address)


def build_host_spec(
    listed: list[ListedFunction],
    lspci: list[ListedFunction] | None = None,
    *,
    bus_parents: dict[int, str | None] | None = None,
    iommu: str | None = "intel",
    boot_vga: str | None = None,
) -> HostSpec:
    """A HostSpec holding the listed functions, their groups and an inferred topology.

    ``boot_vga`` names the function the firmware initialised; the kernel writes
    ``boot_vga`` for VGA-class functions only, so with it the other VGA functions read 0
    and without it no function has the file (the listing does not say). Listings print
    base class and subclass only; the tree gets prog-if 00 unless ``lspci -v`` gave one.
    IOMMU units come from the listing when it names them (``dmarN``), else one unit.
    """
    functions = merge_lspci(listed, lspci or [])
    for function in functions:
        if function.ids is None or function.class_code is None:
            raise ListingError(
                f"{function.address} (line {function.line}) has no [vendor:device] ids or class code in the listing.",
                hint="Use the -nn form, for example `lspci -nns` in the group loop.",
            )
    wanted_vga = _full(boot_vga) if boot_vga else None
    if wanted_vga and wanted_vga not in {function.address for function in functions}:
        raise ListingError(f"boot_vga {boot_vga} is not a function of this listing.")
    topology = infer_topology(functions, bus_parents)
    specs = [
        FunctionSpec(
            address=function.address,
            vendor=function.vendor_id or "",
            device=function.device_id or "",
            class_code=f"{function.class_code}{function.prog_if or '00'}",
            revision=function.revision or "00",  # lspci prints "(rev xx)" only when it is not 00
            subsystem_vendor=function.subsystem_vendor_id,
            subsystem_device=function.subsystem_device_id,
            driver=function.driver,
            iommu_group=function.iommu_group,
            parent=topology.parents[function.address],
            boot_vga=(function.address == wanted_vga) if wanted_vga and function.class_code == "0300" else None,
            has_reset=bool(function.has_reset),
            secondary_bus=topology.secondary_buses.get(function.address),
        )
        for function in functions
    ]
    units: dict[str, list[str]] = {}
    for function in functions:
        if function.iommu_unit and function.iommu_group is not None:
            units.setdefault(function.iommu_unit, []).append(function.address)
    return HostSpec(functions=specs, iommu=iommu, iommu_units=units or None)


def _full(address: str) -> str:
    try:
        return str(PciAddress.parse(address))
    except InvalidAddress as error:
        raise ListingError(f"{address!r} is not a PCI address.", hint=error.hint) from error
