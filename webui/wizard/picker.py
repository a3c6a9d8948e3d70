"""The VM config page's device list: every function a VM can be given, with its group's verdict.

A VM gets a pick's whole IOMMU group (the configuration adds the rest), so each function
carries the verdict of its group as the devices page shows it: the interlock's answer for
binding the group (:mod:`passthrough.ops.interlock`, through the catalog's cards). A
group that may never go is offered disabled with the reason; one with host-critical
members is offered, marked with why the host needs them. Plain Python, no Django.
"""

from __future__ import annotations

from dataclasses import dataclass

from passthrough.pci.model import Inventory
from webui.wizard.catalog import NEEDS_CONFIRMATION, NOT_VIABLE, GroupCard


@dataclass(frozen=True)
class Choice:
    address: str
    label: str  # "01:00.0 GP108 [GeForce GT 1030]"
    group: int | None
    verdict: str | None  # the catalog's verdict of its group; None without IOMMU groups
    why: str  # why it cannot go, or which members are host-critical; empty otherwise

    @property
    def refused(self) -> bool:
        return self.verdict == NOT_VIABLE

    @property
    def critical(self) -> bool:
        return self.verdict == NEEDS_CONFIRMATION


def _short(address: str) -> str:
    return address[5:] if address.startswith("0000:") else address


def _why(card: GroupCard) -> str:
    if card.verdict == NOT_VIABLE:
        return " ".join(card.blocked)
    if card.verdict == NEEDS_CONFIRMATION:
        return " ".join(
            f"{_short(member.function.address)} is host-critical: {'; '.join(member.critical)}."
            for member in card.members
            if member.critical
        )
    return ""


def device_choices(inventory: Inventory, cards: list[GroupCard]) -> list[Choice]:
    """The functions the form offers (no bridges: they stay with the host), in address order."""
    by_group = {card.id: card for card in cards}
    found = []
    for function in inventory.devices:
        if function.is_bridge or function.is_host_bridge:
            continue
        card = by_group.get(function.iommu_group) if function.iommu_group is not None else None
        found.append(
            Choice(
                address=function.address,
                label=f"{_short(function.address)} {function.label}",
                group=function.iommu_group,
                verdict=card.verdict if card else None,
                why=_why(card) if card else "",
            )
        )
    return found


@dataclass(frozen=True)
class RefusedGroup:
    group: int | None
    why: str
    choices: list[Choice]


def refused_groups(choices: list[Choice]) -> list[RefusedGroup]:
    """The functions that can never go, by group: the page says each group's reason once."""
    groups: dict[int | None, list[Choice]] = {}
    for choice in choices:
        if choice.refused:
            groups.setdefault(choice.group, []).append(choice)
    return [RefusedGroup(group, members[0].why, members) for group, members in groups.items()]


def refused(choices: list[Choice]) -> dict[str, str]:
    """address -> why it can never go to a VM, for the form to refuse what it offered disabled."""
    return {choice.address: choice.why for choice in choices if choice.refused}
