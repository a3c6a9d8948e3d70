"""Group verdicts: can this IOMMU group go to a VM, and what must go with it.

vfio hands a VM a whole IOMMU group. Bridges in the group may stay with the host; every
other function (an *endpoint*) must be bound to vfio-pci together. A group is not viable
when it holds nothing to pass, when one of its endpoints is host-critical (found by
:mod:`passthrough.pci.hostcritical` and handed in by the scan), or when it holds chipset
functions the host cannot live without (the LPC/ISA bridge, the SMBus controller:
:func:`never_reason`, the rule the interlock applies too).
"""

from __future__ import annotations

from collections import defaultdict

from passthrough.pci.address import PciAddress
from passthrough.pci.model import IommuGroup, PciFunction

__all__ = ["build_groups", "describe", "never_reason", "CHIPSET_CLASSES"]

# Functions of the platform itself: binding them to vfio-pci takes the host's LPC bus
# (keyboard controller, TPM, fan and power control) or its SMBus (memory SPD, sensors).
CHIPSET_CLASSES = {"0601": "LPC/ISA bridge", "0c05": "SMBus controller"}


def never_reason(function: PciFunction) -> str | None:
    """Why no action may touch ``function`` at all, or None: the platform's own functions.

    The one chipset rule: a group holding such an endpoint is not viable, and the interlock
    (:mod:`passthrough.ops.interlock`) refuses every action on it, in the same words.
    """
    chipset = CHIPSET_CLASSES.get((function.class_code or "")[:4])
    if chipset:
        return f"the chipset's {chipset}; the host cannot run without it"
    if function.is_host_bridge:
        held = f" held by {function.driver}" if function.driver else ""
        return f"a host bridge{held}; it belongs to the platform"
    if function.is_bridge:
        return "a PCI bridge; every device behind it depends on it"
    return None


# What a graphics card carries beside its GPU: HDMI/DP audio, a USB-C controller and its
# UCSI serial-bus function (Turing and later).
CARD_FUNCTION_CLASSES = ("03", "0403", "0c03", "0c80")


def _card_key(function: PciFunction) -> tuple[object, ...]:
    """Functions with one key are one graphics card.

    Usually that is one slot (01:00.0 and 01:00.1). Cards with an internal PCIe switch
    (AMD Navi, Intel Arc) put the GPU and its audio on different buses under one switch
    upstream port, so below a downstream port the key is that upstream port.
    """
    if len(function.bridges) >= 3:
        return ("switch", function.bridges[1])
    return ("slot", PciAddress.parse(function.address).slot_key)


def graphics_cards(functions: list[PciFunction]) -> list[list[PciFunction]]:
    """Each GPU with the functions of its card (same vendor, audio/USB/serial classes)."""
    by_key: dict[tuple[object, ...], list[PciFunction]] = defaultdict(list)
    for function in functions:
        by_key[_card_key(function)].append(function)
    cards = []
    for members in by_key.values():
        vendors = {function.vendor_id for function in members if function.is_display}
        if not vendors:
            continue
        cards.append(
            [
                function
                for function in members
                if function.vendor_id in vendors
                and not function.is_bridge
                and any((function.class_code or "").startswith(prefix) for prefix in CARD_FUNCTION_CLASSES)
            ]
        )
    return cards


def describe(function: PciFunction) -> str:
    """``01:00.1 (GP108 High Definition Audio Controller)``, the way a person names a function."""
    short = function.address[5:] if function.address.startswith("0000:") else function.address
    return f"{short} ({function.label})"


def build_groups(
    functions: list[PciFunction], host_critical: dict[str, list[str]], *, acs_override: bool = False
) -> list[IommuGroup]:
    members: dict[int, list[PciFunction]] = defaultdict(list)
    for function in functions:
        if function.iommu_group is not None:
            members[function.iommu_group].append(function)
    card_of: dict[str, list[PciFunction]] = {}
    for card in graphics_cards(functions):
        for function in card:
            card_of[function.address] = card

    groups = []
    for group_id in sorted(members):
        group_functions = members[group_id]
        group = IommuGroup(id=group_id, devices=[function.address for function in group_functions])
        stays = [function for function in group_functions if _stays_with_host(function)]
        group.bridges = [function.address for function in stays]
        endpoints = [function for function in group_functions if function not in stays]
        group.endpoints = [function.address for function in endpoints]
        group.host_critical = [function.address for function in group_functions if function.address in host_critical]
        _judge(group, endpoints, host_critical, card_of, acs_override)
        groups.append(group)
    return groups


def _stays_with_host(function: PciFunction) -> bool:
    """vfio accepts a group whose bridges keep their driver, and host bridges with none."""
    return function.is_bridge or (function.is_host_bridge and function.driver is None)


def _judge(
    group: IommuGroup,
    endpoints: list[PciFunction],
    host_critical: dict[str, list[str]],
    card_of: dict[str, list[PciFunction]],
    acs_override: bool,
) -> None:
    reasons = group.reasons
    if not endpoints:
        group.viable = False
        reasons.append("Only bridges are in this group: there is no device to pass through.")
        return

    blockers = []
    for function in endpoints:
        for why in host_critical.get(function.address, []):
            blockers.append(f"{describe(function)} is host-critical: {why}.")
        # Endpoints are never bridges, and a host bridge is one only when a driver holds it.
        platform = never_reason(function)
        if platform:
            blockers.append(f"{describe(function)} is {platform}.")
    group.viable = not blockers
    reasons.extend(blockers)

    slots = {PciAddress.parse(function.address).slot_key for function in endpoints}
    names = ", ".join(describe(function) for function in endpoints)
    if not group.viable:
        reasons.append(f"In this group: {names}.")
    elif len(endpoints) == 1:
        reasons.append(f"One device to pass: {names}.")
    elif len(slots) == 1:
        reasons.append(f"The {len(endpoints)} functions of one device go together: {names}.")
    else:
        reasons.append(
            f"All {len(endpoints)} endpoints of this group must be passed together, "
            f"they cannot be split between host and VM: {names}."
        )
    if group.bridges:
        count = len(group.bridges)
        reasons.append(
            f"{count} bridge{'s' if count > 1 else ''} in the group stay{'' if count > 1 else 's'} with the host; that is fine."
        )

    in_group = set(group.devices)
    companions: list[PciFunction] = []
    for function in endpoints:
        for other in card_of.get(function.address, []):
            if other.address not in in_group and other not in companions:
                companions.append(other)
    group.companions = [function.address for function in companions]
    for function in companions:
        where = f"group {function.iommu_group}" if function.iommu_group is not None else "no group"
        reasons.append(f"{describe(function)} is part of the same card but sits in {where}; pass it too.")
    if acs_override:
        reasons.append(
            "This kernel runs with pcie_acs_override: the hardware does not enforce this group's "
            "isolation, so a device here may still reach its neighbours' memory."
        )
