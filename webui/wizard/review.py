"""The wizard's device picker and its plan review as data (plain Python, no Django).

``candidates`` lists what a user may pick in step 2, one entry per physical device;
``review`` says, for the picked device, exactly what moves to vfio-pci, what could go
wrong on this host, what the snapshot could not tell, and how to undo it (step 3, and the
devices page's review before a group is passed). Both read a snapshot's inventory and
readiness report, never the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from passthrough.ops import amd_reset_bug_family
from passthrough.ops.files import unified_diff
from passthrough.pci.isolation import describe
from passthrough.pci.model import Inventory, PciFunction
from webui.wizard.catalog import NOT_VIABLE, PICK_ORDER, GroupCard, group_card

VFIO = "vfio-pci"
# Readiness checks whose warning weakens isolation itself (a risk), and whose skip leaves it unknown.
ISOLATION_CHECKS = ("interrupt_remapping", "acs_override")


@dataclass
class Candidate:
    function: PciFunction  # what the user picks: the card's display function, else its first
    card: GroupCard
    moves_with: list[tuple[PciFunction, str]]  # the other functions that go too, and why

    @property
    def kind(self) -> str:
        return self.function.kind


def _physical_key(function: PciFunction) -> tuple[int, ...]:
    return function.pci_address.slot_key


def candidates(inventory: Inventory) -> tuple[list[Candidate], int]:
    """One entry per physical device that has an IOMMU group, GPUs first; and how many SR-IOV
    virtual functions were left out (they are on the groups page, one group each)."""
    found: list[Candidate] = []
    left_out = 0
    for group in inventory.groups:
        if not group.endpoints:
            continue
        card = group_card(inventory, group)
        endpoints = [function for function in (inventory.device(a) for a in group.endpoints) if function]
        by_device: dict[tuple[int, ...], list[PciFunction]] = {}
        for function in endpoints:
            if function.is_vf:
                left_out += 1
                continue
            if function.is_host_bridge:
                continue
            by_device.setdefault(_physical_key(function), []).append(function)
        for functions in by_device.values():
            picked = next((function for function in functions if function.is_display), functions[0])
            found.append(Candidate(picked, card, _moves_with(inventory, card, picked)))
    found.sort(
        key=lambda candidate: (
            _pick_rank(candidate.kind),
            candidate.card.verdict == NOT_VIABLE,
            candidate.function.address,
        )
    )
    return found, left_out


def _pick_rank(kind: str) -> int:
    return PICK_ORDER.index(kind) if kind in PICK_ORDER else len(PICK_ORDER)


def _moves_with(inventory: Inventory, card: GroupCard, picked: PciFunction) -> list[tuple[PciFunction, str]]:
    moves = []
    for address in card.group.endpoints:
        function = inventory.device(address)
        if function is None or address == picked.address:
            continue
        if _physical_key(function) == _physical_key(picked) and not function.is_vf:
            moves.append((function, "another function of the same card"))
        else:
            moves.append((function, f"shares IOMMU group {card.id}; vfio gives a VM the whole group"))
    for address in card.group.companions:
        function = inventory.device(address)
        if function is not None:
            where = "no IOMMU group" if function.iommu_group is None else f"IOMMU group {function.iommu_group}"
            moves.append((function, f"part of the same card but in {where}; it has to be passed too"))
    return moves


@dataclass
class CmdlineEdit:
    """A kernel command-line change a readiness check proposes for this host."""

    check_id: str
    title: str
    status: str
    add: list[str]
    remove: list[str]
    fix: str | None
    diffs: list[tuple[str, str]] = field(default_factory=list)  # (path, unified diff)


@dataclass
class Review:
    card: GroupCard
    picked: PciFunction
    moves: list[PciFunction]  # to vfio-pci, with their drivers now
    stays: list[PciFunction]  # bridges of the group, which keep their driver
    companions: list[PciFunction]  # same card, other group: not moved by this bind
    console: str | None  # what happens to the boot GPU's console
    risks: list[str]
    undo: list[str]
    cmdline: list[CmdlineEdit]
    native_drivers: dict[str, str | None]  # what each function is on now (for binding at boot)
    unchecked: list[str] = field(default_factory=list)  # what the snapshot could not tell about this plan


def cmdline_edits(readiness: dict[str, Any]) -> list[CmdlineEdit]:
    edits = []
    for check in readiness.get("checks", []):
        plan = check.get("plan") or {}
        if check.get("status") not in ("fail", "warn") or not (plan.get("add") or plan.get("remove")):
            continue
        diffs = [
            (edit["path"], unified_diff(edit["path"], edit.get("before"), edit.get("after")))
            for edit in plan.get("edits") or []
            if edit.get("before") != edit.get("after")
        ]
        edits.append(
            CmdlineEdit(
                check_id=check["id"],
                title=check.get("title", check["id"]),
                status=check["status"],
                add=list(plan.get("add") or []),
                remove=list(plan.get("remove") or []),
                fix=check.get("fix"),
                diffs=diffs,
            )
        )
    return edits


def review(inventory: Inventory, address: str, readiness: dict[str, Any]) -> Review | None:
    """The plan for passing ``address``'s group, or None when the snapshot has no such function or group."""
    picked = inventory.device(address)
    group = inventory.group_of(address)
    if picked is None or group is None:
        return None
    card = group_card(inventory, group)
    moves = [function for function in (inventory.device(a) for a in group.endpoints) if function]
    stays = [function for function in (inventory.device(a) for a in group.bridges) if function]
    companions = [function for function in (inventory.device(a) for a in group.companions) if function]
    console = None
    if card.boot_gpu is not None:
        console = (
            f"{describe(card.boot_gpu)} is the GPU the firmware booted with. If the host's console (efifb, "
            "simpledrm or the GPU's own driver) draws on it, it has to be released first, or vfio-pci may fail to "
            "claim the card's memory. The host's screen goes dark when it is released; use SSH or another GPU."
        )
    return Review(
        card=card,
        picked=picked,
        moves=moves,
        stays=stays,
        companions=companions,
        console=console,
        risks=_risks(inventory, card, moves, companions, readiness),
        undo=_undo(moves),
        cmdline=cmdline_edits(readiness),
        # None says "no driver before": the plan then writes no softdep instead of guessing.
        native_drivers={function.address: function.driver for function in moves if function.driver != VFIO},
        unchecked=_unchecked(inventory, moves, readiness),
    )


# What stops on the host when a function of this kind leaves its driver, said for that kind only.
IN_USE_BY_KIND = {
    "gpu": " (a desktop or a console drawn on it, programs using it for compute)",
    "audio": " (sound played through it, e.g. a monitor's speakers over HDMI)",
    "network": " (every connection through it, an SSH session included if it carries one)",
    "storage": " (every filesystem mounted from a disk on it, and swap)",
    "usb": " (every keyboard, mouse and drive plugged into its ports)",
}


def _risks(
    inventory: Inventory,
    card: GroupCard,
    moves: list[PciFunction],
    companions: list[PciFunction],
    readiness: dict[str, Any],
) -> list[str]:
    risks = list(card.blocked)
    no_reset = [describe(f) for f in moves if f.reset_methods == []]
    unknown_reset = [describe(f) for f in moves if f.reset_methods is None and f.has_reset is False]
    for function in moves:
        for why in inventory.host_critical.get(function.address, []):
            risks.append(f"{describe(function)} is host-critical: {why}. The host loses it while the VM has it.")
        if function.driver and function.driver != VFIO:
            risks.append(
                f"{describe(function)} is on {function.driver} now: whatever on the host uses it stops"
                f"{IN_USE_BY_KIND.get(function.kind, '')}."
            )
        family = amd_reset_bug_family(function)
        if family:
            risks.append(
                f"{describe(function)} is an AMD {family} GPU, known for the reset bug: after the VM stops it "
                "may not work again until the host reboots, unless the vendor-reset module is installed."
            )
    if no_reset:
        risks.append(
            f"The kernel has no reset method for {', '.join(no_reset)}: a VM restart may find "
            f"{'it' if len(no_reset) == 1 else 'them'} as the last guest left {'it' if len(no_reset) == 1 else 'them'}, "
            "and only a host reboot clears that."
        )
    if unknown_reset:
        risks.append(
            f"The snapshot shows no reset attribute for {', '.join(unknown_reset)}, so the kernel may have no way to "
            "reset them: a VM restart may find them as the last guest left them, and only a host reboot clears that."
        )
    for function in companions:
        where = "no IOMMU group" if function.iommu_group is None else f"IOMMU group {function.iommu_group}"
        risks.append(
            f"{describe(function)} is part of the same card but sits in {where}: this bind does not move it; "
            "pass that group too, or the card may not work in the VM."
        )
    # Failing checks, and the warnings that weaken isolation itself.
    for check in readiness.get("checks", []):
        status = check.get("status")
        if status == "fail" or (status == "warn" and check.get("id") in ISOLATION_CHECKS):
            risks.append(f"Readiness: {check.get('summary')}")
    return risks


def _unchecked(inventory: Inventory, moves: list[PciFunction], readiness: dict[str, Any]) -> list[str]:
    """What the snapshot could not tell about the functions that move.

    Host-critical functions are found from the route table, the mounts and the consoles
    (passthrough.pci.hostcritical). A capture without them finds none, and a plan must not read
    as safe only because nothing was found: when no function of a kind is host-critical on
    the whole host, the ones of that kind that move are named here.
    """
    critical_kinds = {function.kind for function in map(inventory.device, inventory.host_critical) if function}
    unmarked = [function for function in moves if function.address not in inventory.host_critical]
    unchecked = []
    nics = [function for function in unmarked if function.kind == "network"]
    if nics and "network" not in critical_kinds:
        unchecked.append(
            "No NIC on this host is known to carry the default route: no route table was read, or the route "
            "leaves through something that is not a PCI NIC. So the NIC carrying your SSH session cannot be told "
            f"apart: if you reach this host over the network, make sure it is not {_names(nics)}; passing "
            f"{'it' if len(nics) == 1 else 'them'} through cuts that connection."
        )
    disks = [function for function in unmarked if function.kind == "storage"]
    if disks and "storage" not in critical_kinds:
        unchecked.append(
            "No storage controller on this host is known to hold the root filesystem: no mount table was read, or "
            "the root is on something that is not a PCI controller (USB, the network). So whether "
            f"{_names(disks)} holds it cannot be told: if it does, the host stops when it goes."
        )
    for function in unmarked:
        if function.is_display and function.boot_vga is None:
            unchecked.append(
                f"Whether the firmware booted on {describe(function)} was not read, so whether the host's console "
                "draws on it cannot be told: if it does, the host's screen goes dark and vfio-pci may fail to claim it."
            )
    for check in readiness.get("checks", []):
        if check.get("status") == "skip" and check.get("id") in ISOLATION_CHECKS:
            unchecked.append(f"Readiness could not check {check.get('title', check['id'])}: {check.get('summary')}")
    return unchecked


def _names(functions: list[PciFunction]) -> str:
    return ", ".join(describe(function) for function in functions)


def _undo(moves: list[PciFunction]) -> list[str]:
    drivers = ", ".join(f"{describe(function)} to {function.driver or 'no driver'}" for function in moves)
    return [
        f'Give it back at any time from the bind job\'s page ("Give back to the host"): {drivers}, as before.',
        'Binding at boot, if you choose it, is undone from its own job page ("Undo"): the files it wrote are '
        "restored from their backups; reboot afterwards.",
        "Without binding at boot, a reboot also gives everything back to the host.",
    ]
