"""The interlock: may an action touch these PCI functions, and what must be typed first.

One rule for every privileged action (binding to vfio-pci now or at every boot, a reset,
a change of SR-IOV VF count), asked by the operations just before they act and by the
pages that offer them, so both say the same thing:

* some functions are never given away or disturbed, whatever is typed: the chipset's
  LPC/ISA bridge and SMBus controller, host bridges, and PCI bridges themselves;
* host-critical functions (the boot GPU under the host's console, the root filesystem's
  controller, the NIC with the default route; see :mod:`passthrough.pci.hostcritical`) need
  the typed confirmation: their addresses, space-separated;
* an action touches more than its targets when the kernel says so: changing a PF's VF
  count destroys its VFs. Those are judged as well, and named when they are the reason.

A reset touches its target alone, whatever the method. A bus reset resets the secondary
bus of the parent bridge, but the kernel performs one only for a function that is alone
on that bus and is not a bridge (pci_parent_bus_reset() answers ENOTTY otherwise), so
there is never another function on the bus it resets; when other functions share the
bus, the reset itself refuses it (:func:`passthrough.ops.reset.bus_reset_obstacle`).

:func:`judge` says what an action would touch and why it may not; :func:`check_action`
raises the refusal as an error a user can act on, or returns the :class:`Permission`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passthrough.ops.errors import ConfirmationRequired, NeverAllowed
from passthrough.pci.isolation import describe, never_reason
from passthrough.pci.model import Inventory, PciFunction

BIND = "bind_vfio"
BIND_AT_BOOT = "persist_binding"
RESET = "reset"
SET_SRIOV_VFS = "set_sriov_vfs"
GIVE_TO_VM = "attach_vm"  # into a VM's configuration: the VM takes it from the host when it starts
ACTIONS = (BIND, BIND_AT_BOOT, RESET, SET_SRIOV_VFS, GIVE_TO_VM)
# Reset methods that reset the parent bridge's secondary bus; the kernel does it only when
# the function is alone on that bus (see the module's docstring).
BUS_RESETS = ("bus", "cxl_bus")


def confirmation_phrase(addresses: list[str]) -> str:
    """What a user types to touch host-critical functions anyway: their addresses, space-separated."""
    return " ".join(sorted(addresses))


def short(address: str) -> str:
    return address[5:] if address.startswith("0000:") else address


@dataclass(frozen=True)
class Verdict:
    """What an action would touch, and what stands in its way (nothing: it may go ahead)."""

    action: str
    doing: str  # the action in words: "a bus reset of 0c:00.0 (GK208B [GeForce GT 710])"
    targets: list[str]
    touched: list[str]  # the targets, then what goes with them
    never: list[str]  # sentences; any one forbids the action, and no confirmation overrides it
    critical: dict[str, list[str]]  # host-critical functions touched -> why each is
    along: dict[str, str] = field(default_factory=dict)  # address -> why it is touched though not a target

    @property
    def allowed(self) -> bool:
        """Allowed at all (host-critical functions may still need the confirmation)."""
        return not self.never

    @property
    def confirm_phrase(self) -> str | None:
        return confirmation_phrase(list(self.critical)) if self.critical else None

    def critical_text(self) -> str:
        return "; ".join(
            f"{short(address)}{_aside(self.along.get(address), ' (', ')')}: {', '.join(reasons)}"
            for address, reasons in sorted(self.critical.items())
        )

    def reason(self) -> str | None:
        """The sentence a page shows beside the action, or None when it may simply go ahead."""
        if self.never:
            return f"{_capital(self.doing)} is never allowed: {' '.join(self.never)}"
        if self.critical:
            return (
                f"{_capital(self.doing)} touches host-critical functions ({self.critical_text()}). "
                f"To go ahead anyway, type {self.confirm_phrase}."
            )
        return None


@dataclass(frozen=True)
class Permission:
    action: str
    touched: list[str]
    confirmed: list[str]  # the host-critical functions the typed confirmation covered


def judge(inventory: Inventory, action: str, addresses: list[str], *, method: str | None = None) -> Verdict:
    """What ``action`` on ``addresses`` touches and why it may not (``method``: a reset's, None for the kernel's)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    targets = [inventory.require(address) for address in dict.fromkeys(addresses)]
    along: dict[str, str] = {}
    for function in targets:
        along.update(_along(inventory, action, function))
    for function in targets:
        along.pop(function.address, None)
    touched = [function.address for function in targets] + list(along)
    never: list[str] = []
    critical: dict[str, list[str]] = {}
    for address in touched:
        function = inventory.require(address)
        why = never_reason(function)
        if why:
            never.append(f"{describe(function)}{_aside(along.get(address))} is {why}.")
        if address in inventory.host_critical:
            critical[address] = list(inventory.host_critical[address])
    return Verdict(
        action=action,
        doing=_doing(action, targets, method),
        targets=[function.address for function in targets],
        touched=touched,
        never=never,
        critical=critical,
        along=along,
    )


def check_action(
    inventory: Inventory, action: str, addresses: list[str], confirm: str | None, *, method: str | None = None
) -> Permission:
    """The :class:`Permission` to act, or :class:`NeverAllowed` / :class:`ConfirmationRequired` saying why not."""
    verdict = judge(inventory, action, addresses, method=method)
    if verdict.never:
        raise NeverAllowed(
            f"{_capital(verdict.doing)} is refused: {' '.join(verdict.never)}",
            hint="No confirmation overrides this. " + _never_hint(verdict),
        )
    typed = (confirm or "").strip()
    expected = verdict.confirm_phrase
    if expected is not None and typed != expected:
        message = f"{_capital(verdict.doing)} touches host-critical functions ({verdict.critical_text()})."
        if typed:
            message += f" The confirmation given (“{typed}”) is not the one asked for."
        hint = f"To go ahead anyway, type {expected} as the confirmation."
        raise ConfirmationRequired(message, expected=expected, hint=hint)
    return Permission(action, verdict.touched, sorted(verdict.critical))


def _along(inventory: Inventory, action: str, function: PciFunction) -> dict[str, str]:
    """What the action touches besides ``function``, each with the words that say why.

    Only a change of VF count reaches further: a reset, bus resets included, touches the
    function alone (see the module's docstring).
    """
    if action == SET_SRIOV_VFS:
        removed = [vf for vf in function.virtfns if inventory.device(vf) is not None]
        return {vf: f"a VF of {short(function.address)} that the change removes" for vf in removed}
    return {}


def _doing(action: str, targets: list[PciFunction], method: str | None) -> str:
    names = ", ".join(describe(function) for function in targets)
    if action == BIND:
        return f"binding {names} to vfio-pci"
    if action == BIND_AT_BOOT:
        return f"binding {names} to vfio-pci at every boot"
    if action == SET_SRIOV_VFS:
        return f"changing the VF count of {names}"
    if action == GIVE_TO_VM:
        return f"giving {names} to a VM"
    if method is None:
        return f"a reset of {names} by the kernel's choice of method"
    return f"{'an' if method[0] in 'aefi' else 'a'} {method} reset of {names}"


def _never_hint(verdict: Verdict) -> str:
    if verdict.action in (BIND, BIND_AT_BOOT, GIVE_TO_VM):
        return (
            "Pick another device; a card that shares its IOMMU group with these needs a slot whose group holds only it."
        )
    return "The host keeps this function as it is."


def _aside(words: str | None, before: str = ", ", after: str = ",") -> str:
    return f"{before}{words}{after}" if words else ""


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
