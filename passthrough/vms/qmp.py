"""Plain QEMU VMs: QEMU processes with a QMP socket, and hot-plugging host functions into them.

A plain QEMU VM has no saved configuration (a hot-plugged device lasts until QEMU exits),
so all here is live. :func:`read` finds ``qemu-system-*`` processes with a QMP server
socket in the tree's ``proc/<pid>/cmdline`` (``-qmp unix:PATH,server…``, or ``-chardev
socket,id=X,path=PATH,server…`` with ``-mon chardev=X,mode=control``; not libvirt's), and
sockets named explicitly: paths on the machine the worker runs on. :func:`attach` adds
``vfio-pci`` on free hot-pluggable ports, proven by ``query-pci``; :func:`detach` removes
them, which QEMU confirms (``DEVICE_DELETED``) only once the guest OS lets go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Any

from passthrough.configgen.layout import GuestSlot, guest_slots
from passthrough.host import HostTree
from passthrough.ops.errors import InvalidRequest
from passthrough.ops.flow import carry_out
from passthrough.ops.result import FAILED, SUCCEEDED, UNCHANGED, OperationResult, Progress, Recorder
from passthrough.ops.sysfs import VFIO, as_failure
from passthrough.pci.isolation import describe
from passthrough.vms.model import HeldDevice, Vm, VmError, VmInventory, VmSource
from passthrough.vms.qmpwire import (
    BRIDGES,
    Found,
    Peripheral,
    Plugged,
    Port,
    SeenFunction,
    Session,
    discover,
    plug,
    session,
)
from passthrough.vms.qmpwire import unplug as unplug_items
from passthrough.vms.validate import parse_addresses, parse_live, prepare, require_vm, spec_name

KIND = "qemu"
COMMAND_TIMEOUT = 10.0  # connecting, and each QMP command
PROOF_TIMEOUT = 30.0  # for query-pci to list a hot-plugged device (its bus numbered by the firmware)
UNPLUG_TIMEOUT = 30.0  # for the guest to acknowledge a hot-unplug (DEVICE_DELETED)


class NotOnVfio(VmError):
    code = "not_on_vfio"


class CannotHotplug(VmError):
    code = "cannot_hotplug"


class DeviceNotInVm(VmError):
    code = "device_not_in_vm"


# Reading one VM ---------------------------------------------------------------------------
@dataclass
class Look:
    """One QEMU as its monitor describes it now."""

    status: str
    machine: str | None
    peripherals: list[Peripheral]
    pci: list[SeenFunction]
    ports: list[Port]

    def holds(self, address: str) -> Peripheral | None:
        return next((held for held in self.peripherals if held.host == address), None)

    @property
    def free_ports(self) -> int:
        return sum(1 for port in self.ports if port.free)

    def plugged(self, held: Peripheral) -> Plugged:
        where = {item.id: (port.bus, item.slot, item.function) for port in self.ports for item in port.occupants}
        return (held.id, held.host or "", *where.get(held.id, ("", -1, -1)))

    def state(self) -> dict[str, Any]:
        """What attach and detach change and are compared by (guest addresses appear as buses get numbered)."""
        devices = sorted((held.host or "", held.id) for held in self.peripherals)
        return {"devices": [{"host": host, "alias": alias} for host, alias in devices], "free_ports": self.free_ports}


def read_live(socket: str, timeout: float = COMMAND_TIMEOUT) -> Look:
    with Session(socket, timeout) as qemu:
        status = str(qemu.run("query-status")["status"])
        return Look(status, qemu.machine(), qemu.peripherals(), qemu.pci(), qemu.ports())


def state_now(socket: str, timeout: float) -> dict[str, Any]:
    try:
        return read_live(socket, timeout).state()
    except VmError as error:  # QEMU has gone, or stopped answering
        return {"unreadable": error.message}


def why_not_hotplug(look: Look) -> str | None:
    """Why nothing can be hot-plugged into this QEMU now; None when something can."""
    if look.status in ("shutdown", "guest-panicked", "internal-error"):
        return f"its guest is {look.status}: start it again first."
    if look.free_ports:
        return None
    if "q35" in (look.machine or ""):
        taken = sum(1 for port in look.ports if port.driver != "pci-bridge")
        return (
            (f"all {taken} of its hot-pluggable root ports are taken" if taken else "it has no pcie-root-port")
            + ", and QEMU cannot add root ports to a running machine: start it with spare ones "
            "(-device pcie-root-port,id=rp1,chassis=1,slot=1 and so on)."
        )
    return (
        f"a {look.machine or 'non-q35'} machine has no PCIe root ports, and the wizard hot-plugs there only onto a "
        "hot-pluggable PCI bridge, which it lacks: start it with -device pci-bridge,id=pb1,chassis_nr=1, or use q35."
    )


def inspect(found: Found, timeout: float = COMMAND_TIMEOUT) -> Vm:
    """The VM behind one socket; a socket that does not answer gives state "unknown" and why."""
    try:
        look = read_live(found.socket, timeout)
    except Exception as error:  # a dead socket, another client on it, something that is not QEMU
        reason = as_failure(error, f"Reading {found.socket}")
        return Vm(KIND, found.socket, found.name, "unknown", hotplug=reason.message, detail=str(reason))
    guests = {seen.qdev_id: seen.guest for seen in look.pci if seen.qdev_id}
    devices = [
        HeldDevice(held.host, guests.get(held.id), False, True, held.id) for held in look.peripherals if held.host
    ]
    states = {"running": "running", "shutdown": "shut off", "guest-panicked": "crashed", "internal-error": "crashed"}
    pid = f"pid {found.pid}; " if found.pid else ""
    return Vm(
        kind=KIND, id=found.socket, name=found.name, state=states.get(look.status, "paused"), machine=look.machine,
        devices=devices, hotplug=why_not_hotplug(look), free_ports=look.free_ports,
        detail=f"QMP status {look.status}; {pid}no saved configuration: hot-plugged devices last until QEMU exits",
    )  # fmt: skip


def read(tree: HostTree, sockets: Any = (), *, command_timeout: float = COMMAND_TIMEOUT) -> VmSource:
    """Every plain QEMU VM: those found in proc/, then ``sockets`` (paths on this machine) not found there."""
    found = [Found(item.socket, spec_name(item.name, f"qemu-{item.pid}"), item.pid) for item in discover(tree)]
    for socket in [sockets] if isinstance(sockets, str) else sockets or ():
        if isinstance(socket, str) and socket and socket not in {item.socket for item in found}:
            found.append(named_by_socket(socket))
    vms = [inspect(item, command_timeout) for item in found]
    if not vms:
        return VmSource(KIND, True, "No QEMU process with a QMP socket runs here. Start one with -qmp "
                        "unix:/run/vm1.qmp,server=on,wait=off and spare pcie-root-ports, or name its socket in "
                        "PASSTHROUGH_QMP_SOCKETS.")  # fmt: skip
    return VmSource(KIND, True, f"{len(vms)} QMP socket(s) of plain QEMU processes", vms)


def named_by_socket(socket: str) -> Found:
    return Found(socket, spec_name(os.path.splitext(os.path.basename(socket))[0], "qemu"))


# Placing and attaching ------------------------------------------------------------------
def device_id(address: str) -> str:
    """``0000:06:00.1`` -> ``pw-06-00-1`` (QEMU ids take only letters, digits and ``-._``)."""
    domain, rest = address.split(":", 1)
    return "pw-" + ("" if domain == "0000" else f"{domain}-") + rest.replace(":", "-").replace(".", "-")


@dataclass
class Placed:
    """One card on one port: its functions at ``slot``.function there."""

    bus: str
    slot: int
    card: GuestSlot

    def commands(self) -> list[dict[str, Any]]:
        """device_add arguments, function 0 last: PCIe hot-plug announces the slot when function 0 arrives."""
        commands = []
        for device, function in sorted(self.card.functions, key=lambda pair: (pair[1] == 0, pair[1])):
            arguments = {"driver": "vfio-pci", "host": device.address, "id": device_id(device.address),
                         "bus": self.bus, "addr": f"{self.slot:02x}.{function:x}"}  # fmt: skip
            if function == 0 and self.card.multifunction:
                arguments["multifunction"] = "on"
            commands.append(arguments)
        return commands

    def describe(self) -> str:
        return f"{', '.join(device.address for device in self.card.devices)} on {self.bus} slot {self.slot:02x}"


def place(ports: list[Port], cards: list[GuestSlot], why_not: str | None, name: str) -> list[Placed]:
    """A free place for each card: empty root ports first, then free slots of hot-pluggable bridges."""
    places = [
        (port.bus, slot)
        for port in sorted(ports, key=lambda p: (p.driver in BRIDGES, p.bus))
        for slot in port.free_slots
    ]
    if not places:
        raise CannotHotplug(f"Nothing can be hot-plugged into {name}: {why_not}")
    if len(places) < len(cards):
        raise CannotHotplug(
            f"{name} has {len(places)} free hot-pluggable port(s) and this needs {len(cards)}, one per card.",
            hint="QEMU cannot add root ports to a running machine: start it with spare ones "
            "(-device pcie-root-port,id=rpN,chassis=N,slot=N), or attach fewer devices.",
        )
    return [Placed(bus, slot, card) for (bus, slot), card in zip(places, cards, strict=False)]


def _require_qemu(vm: Vm, live: bool | None) -> None:
    if vm.kind != KIND:
        raise InvalidRequest(f"{vm.ref} is a {vm.kind} VM, not a plain QEMU one.")
    if vm.state == "unknown":
        raise VmError(f"{vm.ref} cannot be read now: {vm.hotplug}", hint="Try again once its monitor answers.")
    if live is False:
        raise CannotHotplug(
            f"{vm.ref} has no saved configuration to change: a plain QEMU VM takes devices only live, through QMP.",
            hint="For its next start, add -device vfio-pci,host=ADDR to its command line (vmconfig --target qemu).",
        )


def attach(
    tree: HostTree,
    vms: VmInventory,
    reference: Any,
    addresses: Any,
    *,
    live: Any = None,
    confirm: Any = None,
    fingerprint: Any = None,
    progress: Progress | None = None,
    sockets: Any = (),
    primary_gpu: bool = False,
    command_timeout: float = COMMAND_TIMEOUT,
    proof_timeout: float = PROOF_TIMEOUT,
    unplug_timeout: float = UNPLUG_TIMEOUT,
) -> OperationResult:
    """Hot-plug the functions at ``addresses`` (and what must go with them) into a running QEMU."""
    result = OperationResult("vm_attach", parameters={"vm": reference, "addresses": addresses, "live": live})
    recorder = Recorder(result, progress)
    with recorder.step("validate", reference if isinstance(reference, str) else None) as step:
        wanted = parse_live(live)
        prepared = prepare(tree, vms, reference, addresses, confirm=confirm, fingerprint=fingerprint)
        vm = prepared.vm
        _require_qemu(vm, wanted)
        if primary_gpu:
            raise CannotHotplug(
                "A primary GPU (x-vga) cannot be hot-plugged: QEMU sets up the legacy VGA ranges only for a device "
                "present when the machine starts.",
                hint="Put it on QEMU's command line (manage.py vmconfig --target qemu writes it) and start the VM.",
            )
        for device in prepared.spec.devices:
            function = prepared.inventory.require(device.address)
            if function.driver != VFIO:
                raise NotOnVfio(
                    f"{describe(function)} is on {function.driver or 'no driver'}, not vfio-pci, and a plain QEMU VM "
                    "cannot take it from its driver (QEMU has no managed mode, unlike libvirt).",
                    hint=f"Bind it to vfio-pci first: step 4 of the wizard, or `manage.py device bind {device.address}`.",
                )
        look = read_live(vm.id, command_timeout)
        held = [address for address in prepared.addresses if look.holds(address)]
        if held and len(held) < len(prepared.addresses):
            rest = [address for address in prepared.addresses if address not in held]
            raise VmError(
                f"{vm.ref} already has {', '.join(held)} but not {', '.join(rest)}, which must go with them.",
                hint="Detach them first, then attach them together.",
            )
        placed = [] if held else place(look.ports, guest_slots(prepared.spec), why_not_hotplug(look), vm.ref)
        step.detail = f"{vm.ref} ({look.status}, {look.machine}): " + (
            "already has them" if held else "; ".join(item.describe() for item in placed)
        )
    result.targets = prepared.addresses
    result.parameters = {"vm": vm.ref, "addresses": prepared.picked, "live": True, "confirmed": prepared.confirmed}
    result.state_before = look.state()
    if held:
        result.outcome, result.state_after = UNCHANGED, result.state_before
        return result
    hosts = {address: prepared.inventory.require(address) for address in prepared.addresses}
    added: list[Plugged] = []
    proof: list[dict[str, Any]] = []

    def act() -> None:
        commands = [arguments for item in placed for arguments in item.commands()]
        session(vm.id, command_timeout, partial(plug, recorder, commands, hosts, added, proof, proof_timeout))

    def undo() -> list[Any]:
        removal = partial(unplug_items, recorder, added, unplug_timeout, "rollback")
        return [partial(session, vm.id, command_timeout, removal)] if added else []

    state = partial(state_now, vm.id, command_timeout)
    carry_out(result, act=act, undo=undo, read_state=state, doing=f"Hot-plugging into {vm.ref}")
    if result.outcome == SUCCEEDED:
        result.parameters["proof"] = proof
        result.warnings += [entry["note"] for entry in proof if entry.get("note")]
        devices = [{"id": ident, "host": host} for ident, host, *_ in added]
        result.undo = {"action": "vm_attach", "kind": KIND, "vm": vm.ref, "devices": devices}
    return result


# Detach -----------------------------------------------------------------------------------
def detach(
    tree: HostTree,
    vms: VmInventory,
    reference: Any,
    addresses: Any,
    *,
    live: Any = None,
    progress: Progress | None = None,
    sockets: Any = (),
    command_timeout: float = COMMAND_TIMEOUT,
    unplug_timeout: float = UNPLUG_TIMEOUT,
) -> OperationResult:
    """Hot-unplug the functions at ``addresses`` (and the rest of their card) from a running QEMU."""
    result = OperationResult("vm_detach", parameters={"vm": reference, "addresses": addresses, "live": live})
    recorder = Recorder(result, progress)
    with recorder.step("validate", reference if isinstance(reference, str) else None) as step:
        picked = parse_addresses(addresses)
        wanted = parse_live(live)
        vm = require_vm(vms, reference)
        _require_qemu(vm, wanted)
        look = read_live(vm.id, command_timeout)
        missing = [address for address in picked if look.holds(address) is None]
        if missing:
            has = ", ".join(f"{held.host} ({held.id})" for held in look.peripherals) or "no host function"
            raise DeviceNotInVm(
                f"{vm.ref} does not have {', '.join(missing)}; it has {has}.",
                hint="`manage.py vm list` shows what each VM holds.",
            )
        removing = _with_slot_mates(look, picked)
        step.detail = f"{vm.ref} ({look.status}): " + ", ".join(f"{item[1]} ({item[0]})" for item in removing)
    result.targets = [item[1] for item in removing]
    result.parameters = {"vm": vm.ref, "addresses": picked, "live": True}
    if mates := sorted(set(result.targets) - set(picked)):
        result.warnings.append(f"The other functions of the same card go too: {', '.join(mates)}.")
    result.state_before = look.state()
    try:
        session(vm.id, command_timeout, partial(unplug_items, recorder, removing, unplug_timeout, "device_del"))
        with recorder.step("verify", vm.ref) as step:
            after = read_live(vm.id, command_timeout)
            still = [item[1] for item in removing if after.holds(item[1])]
            if still:
                raise VmError(f"{vm.ref} still has {', '.join(still)} after QEMU reported them deleted.")
            step.detail = f"{vm.ref} has {len(after.peripherals)} host function(s) now"
    except Exception as error:  # the guest kept them, QEMU refused, the monitor went away
        # Nothing to roll back: a device_del QEMU accepted stays pending until the guest answers.
        result.error = as_failure(error, f"Hot-unplugging from {vm.ref}").as_dict()
        result.outcome, result.state_after = FAILED, state_now(vm.id, command_timeout)
        return result
    result.state_after = after.state()
    result.outcome = SUCCEEDED
    result.undo = {"action": "vm_detach", "kind": KIND, "vm": vm.ref, "addresses": result.targets}
    return result


def _with_slot_mates(look: Look, picked: list[str]) -> list[Plugged]:
    """The picked functions and every other held function on the same guest slot (one card)."""
    items = [look.plugged(held) for held in look.peripherals]
    slots = {(item[2], item[3]) for item in items if item[1] in picked and item[2]}
    return [item for item in items if item[1] in picked] + [
        item for item in items if item[1] not in picked and (item[2], item[3]) in slots
    ]


# Undo -------------------------------------------------------------------------------------
def undo(
    tree: HostTree,
    record: dict[str, Any],
    *,
    force: bool = False,
    progress: Progress | None = None,
    sockets: Any = (),
    command_timeout: float = COMMAND_TIMEOUT,
    unplug_timeout: float = UNPLUG_TIMEOUT,
) -> OperationResult:
    """An attach undone is a detach of what it added; a detach undone attaches the functions again."""
    reference = str(record.get("vm", ""))
    if not reference.startswith(f"{KIND}:") or record.get("action") not in ("vm_attach", "vm_detach"):
        raise InvalidRequest("This is not the undo record of an attach or detach of a plain QEMU VM.")
    socket = reference[len(KIND) + 1 :]
    vms = VmInventory([VmSource(KIND, True, socket, [inspect(named_by_socket(socket), command_timeout)])])
    if record["action"] == "vm_detach":
        return attach(tree, vms, reference, record.get("addresses"), progress=progress, command_timeout=command_timeout)
    look = read_live(socket, command_timeout)
    recorded = [(str(item.get("id")), str(item.get("host"))) for item in record.get("devices", [])]
    present = [host for ident, host in recorded if any((h.id, h.host) == (ident, host) for h in look.peripherals)]
    moved = [host for ident, host in recorded if host not in present and look.holds(host)]
    if moved and not force:
        raise VmError(
            f"{reference} holds {', '.join(moved)} under other ids than that attach gave them: it changed since.",
            hint="Detach them by address, or undo with force.",
        )
    if not present + moved:
        result = OperationResult("vm_detach", [host for _, host in recorded], {"vm": reference}, UNCHANGED)
        result.state_before = result.state_after = look.state()
        result.warnings.append(f"{reference} no longer has what that attach added: nothing to undo.")
        return result
    return detach(tree, vms, reference, present + moved, progress=progress, command_timeout=command_timeout,
                  unplug_timeout=unplug_timeout)  # fmt: skip
