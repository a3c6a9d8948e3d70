"""The groups page and the device picker as data: what each IOMMU group offers a user.

Plain Python over an :class:`~passthrough.pci.model.Inventory` (no Django), so it is
tested on its own and built once per snapshot (the page cache keeps it, see
``snapshots.py``). Filtering keeps whole groups: a group is shown with every member or
not at all, since vfio hands a VM the whole group. Whether a group may be passed, and
what must be typed first, is the interlock's answer (:mod:`passthrough.ops.interlock`),
the one the worker asks again before it acts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passthrough.ops.interlock import BIND, judge
from passthrough.pci.model import Inventory, IommuGroup, PciFunction

# The kinds the filter offers, in the order a user looks for them.
FILTER_KINDS = {"gpu": "GPU", "network": "Network", "storage": "Storage", "usb": "USB"}
# The order of the device picker: GPUs first, then what people pass next most often.
PICK_ORDER = ("gpu", "network", "storage", "usb", "audio", "other")

VIABLE = "viable"
NEEDS_CONFIRMATION = "needs-confirmation"
NOT_VIABLE = "not-viable"
VERDICT_LABELS = {
    VIABLE: "Can be passed through",
    NEEDS_CONFIRMATION: "Host-critical: needs your confirmation",
    NOT_VIABLE: "Cannot be passed through",
}


@dataclass
class Member:
    function: PciFunction
    critical: list[str]  # why the host cannot give it away; empty for most
    stays: bool  # a bridge that stays with the host


@dataclass
class GroupCard:
    group: IommuGroup
    members: list[Member]
    verdict: str
    blocked: list[str]  # why it cannot be passed even with a confirmation
    confirm_phrase: str | None  # what to type to pass its host-critical members anyway
    boot_gpu: PciFunction | None  # the firmware's boot display while the host's console holds it
    kinds: frozenset[str]
    search_text: str = field(repr=False)

    @property
    def id(self) -> int:
        return self.group.id

    @property
    def passable(self) -> bool:
        return self.verdict != NOT_VIABLE

    @property
    def verdict_label(self) -> str:
        return VERDICT_LABELS[self.verdict]

    @property
    def nothing_to_pass(self) -> bool:
        """Only bridges (root ports, or a host bridge alone): nothing a VM could be given."""
        return all(member.function.is_bridge or member.function.is_host_bridge for member in self.members)

    @property
    def on_vfio(self) -> bool:
        """Every function the group gives a VM is on vfio-pci already."""
        endpoints = [member.function for member in self.members if not member.stays]
        return bool(endpoints) and all(function.driver == "vfio-pci" for function in endpoints)

    @property
    def vfio_functions(self) -> list[PciFunction]:
        """The functions of the group on vfio-pci now: what giving it back returns to the host."""
        return [member.function for member in self.members if not member.stays and member.function.driver == "vfio-pci"]

    @property
    def first_endpoint(self) -> str | None:
        return self.group.endpoints[0] if self.group.endpoints else None


def _search_text(functions: list[PciFunction], group: IommuGroup) -> str:
    words = [f"group {group.id}"]
    for function in functions:
        words += [
            function.address,
            function.address[5:],
            f"{function.vendor_id}:{function.device_id}",
            function.vendor_name or "",
            function.device_name or "",
            function.subsystem_name or "",
            function.class_name or "",
            function.driver or "",
            function.kind,
        ]
    return "\n".join(words).lower()


def _verdict(inventory: Inventory, group: IommuGroup) -> tuple[str, list[str], str | None]:
    """The group's verdict, what blocks it and the phrase to type: the interlock's answer for a bind."""
    if not group.endpoints:
        return NOT_VIABLE, list(group.reasons), None  # only bridges: nothing to pass
    verdict = judge(inventory, BIND, group.endpoints)
    if verdict.never:
        return NOT_VIABLE, list(verdict.never), None
    if verdict.confirm_phrase:
        return NEEDS_CONFIRMATION, [], verdict.confirm_phrase
    return VIABLE, [], None


def group_card(inventory: Inventory, group: IommuGroup) -> GroupCard:
    functions = [function for function in (inventory.device(address) for address in group.devices) if function]
    verdict, blocked, phrase = _verdict(inventory, group)
    members = [
        Member(function, inventory.host_critical.get(function.address, []), function.address in group.bridges)
        for function in functions
    ]
    # A boot GPU matters when the host's console holds it (hostcritical says so): then it must be released.
    boot_gpu = next(
        (f for f in functions if f.is_display and f.boot_vga and f.address in inventory.host_critical),
        None,
    )
    return GroupCard(
        group=group,
        members=members,
        verdict=verdict,
        blocked=blocked,
        confirm_phrase=phrase,
        boot_gpu=boot_gpu,
        kinds=frozenset(function.kind for function in functions),
        search_text=_search_text(functions, group),
    )


def group_cards(inventory: Inventory) -> list[GroupCard]:
    return [group_card(inventory, group) for group in inventory.groups]


def ungrouped(inventory: Inventory) -> list[PciFunction]:
    """Functions without an IOMMU group (the IOMMU is off, or does not cover them)."""
    return [function for function in inventory.devices if function.iommu_group is None]


def filter_cards(cards: list[GroupCard], text: str = "", kind: str = "") -> list[GroupCard]:
    """Whole groups where some member matches every word of ``text`` and, if given, ``kind``."""
    words = text.lower().split()
    if not words and not kind:
        return list(cards)
    return [
        card for card in cards if (not kind or kind in card.kinds) and all(word in card.search_text for word in words)
    ]
