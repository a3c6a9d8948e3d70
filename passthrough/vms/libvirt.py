"""libvirt domains as the wizard sees them, and the domain XML an attach or a detach makes.

Pure functions over text (:mod:`passthrough.vms.domainxml` reads and edits it), so the
page can show the diff of an attach from the snapshot without touching the host;
:mod:`passthrough.vms.libvirtd` carries the same elements out through the daemon.

On q35 each physical device goes on a ``pcie-root-port`` of its own, and its functions
share slot 0 behind it, as on the real card (:func:`passthrough.configgen.layout.guest_slots`):
a root port nothing sits on when the domain has one, else a new one added after the
domain's last PCI controller; a detach takes away only the ports its attach added
(:mod:`passthrough.vms.rootports` holds those rules). On i440fx the functions take a free
slot of bus 0. The text is changed line by line where libvirt writes such elements, so the
diff shows the new elements and nothing else, and its label says which port each card
uses. What a running domain can take without a restart is said per card
(:func:`live_placements`): one single-function device per free root port, the one the
configuration gets when the running VM has it free; never a multifunction card or a
primary GPU.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from passthrough.configgen.layout import GuestSlot, guest_slots
from passthrough.configgen.libvirt import FIRST_SLOT, hostdev, root_port
from passthrough.configgen.spec import VmSpec
from passthrough.pci.address import PciAddress
from passthrough.vms.domainxml import (
    LAST_SLOT,
    MAX_INDEX,
    Domain,
    insert_devices,
    parse_domain,
    remove_controllers,
    remove_hostdevs,
)
from passthrough.vms.model import HeldDevice, Vm, VmError
from passthrough.vms.rootports import PortFate, PortUse, after_detach, free_ports, mark, port_name
from passthrough.vms.validate import Prepared

KIND = "libvirt"
MULTIFUNCTION = (
    "libvirt hot-plugs one function at a time and refuses a multifunction hostdev, so a card with several "
    "functions goes into the configuration and the VM gets it at its next start"
)
PRIMARY_GPU = (
    "a primary GPU (x-vga) cannot be hot-plugged: QEMU gives a card the legacy VGA ranges only when the VM "
    "starts, so it goes into the configuration for the next start"
)
NO_BRIDGE = (
    "an i440fx VM without a hot-plug bridge cannot take a device while it runs: add a "
    "<controller type='pci' model='pci-bridge'/> (virsh edit) and restart it, or attach to the configuration "
    "for the next start"
)
NO_PORT = (
    "the running VM has no free hot-pluggable PCIe root port: a q35 VM takes a hot-plugged device only on an "
    "empty root port, and those are added while it is shut off (virsh edit: <controller type='pci' "
    "model='pcie-root-port'/>); until then the device goes into the configuration for the next start"
)


def hotplug_blocker(domain: Domain) -> str | None:
    """Why no device can be hot-plugged into this (running) domain now; None: one can."""
    if domain.free_ports():
        return None
    return NO_PORT if domain.q35 else NO_BRIDGE


def vm_from_xml(config: str, state: str, *, live: str | None = None, detail: str = "") -> Vm:
    """A :class:`Vm` from its inactive XML and, when it runs, its live XML."""
    saved = parse_domain(config)
    running = parse_domain(live) if live is not None else None
    now = running or saved
    devices = []
    for address in dict.fromkeys([d.host for d in saved.hostdevs] + [d.host for d in now.hostdevs]):
        in_config, in_live = saved.hostdev(address), running.hostdev(address) if running else None
        shown = in_live or in_config
        assert shown is not None
        devices.append(HeldDevice(host=address, guest=shown.guest, config=in_config is not None,
                                  live=in_live is not None, alias=shown.alias))  # fmt: skip
    return Vm(
        kind=KIND, id=saved.name, name=saved.name, state=state, machine=now.machine, devices=devices, config=config,
        hotplug=hotplug_blocker(now) if running else (None if saved.q35 or saved.free_ports() else NO_BRIDGE),
        free_ports=len(running.free_ports()) if running else None, detail=detail,
    )  # fmt: skip


# Planning -------------------------------------------------------------------------------
def _require_placeable(domain: Domain, ref: str) -> None:
    if not (domain.q35 or domain.i440fx):
        raise VmError(f"{ref} has machine {domain.machine!r}; devices are placed on q35 and i440fx (pc) machines only.",
                      hint="Add the hostdev with virsh edit, or use a q35 VM.")  # fmt: skip


@dataclass
class AttachPlan:
    """What an attach adds to a domain's configuration, and the root port each card goes on (q35)."""

    controllers: list[ET.Element] = field(default_factory=list)  # the root ports it adds
    hostdevs: list[ET.Element] = field(default_factory=list)
    ports: list[PortUse] = field(default_factory=list)

    @property
    def doing(self) -> str:
        """The change in words, as the diff's label: which card uses which free port, which adds one."""
        return "attach: " + "; ".join(port.words() for port in self.ports) if self.ports else "attach"

    def port_of(self, address: str) -> int | None:
        return next((port.index for port in self.ports if address in port.devices), None)


def new_elements(
    domain: Domain, spec: VmSpec, ref: str = "the domain", *, running: bool = False,
    live_buses: set[int] | frozenset[int] = frozenset(),
) -> AttachPlan:  # fmt: skip
    """The root ports and hostdevs an attach adds to ``domain``, in attach order.

    q35: per card the free root port with the lowest index (:func:`rootports.free_ports`;
    ``running`` with ``live_buses``, the buses the running VM has a device on), else a new
    root port at the next controller index (the highest PCI controller index + 1), with a
    chassis and port no other controller has and the wizard's alias. i440fx: a free slot of
    bus 0 per card (0 is the host bridge, 1 the PIIX3, 2 where libvirt puts the video)."""
    _require_placeable(domain, ref)
    holder = ET.Element("devices")
    plan = AttachPlan()
    free = free_ports(domain, running=running, live_buses=live_buses) if domain.q35 else []
    index = max((c.index for c in domain.controllers), default=0) + 1
    chassis_used = {c.chassis for c in domain.controllers if c.chassis is not None}
    ports_used = {c.port for c in domain.controllers if c.port is not None}
    aliases = {c.alias for c in domain.controllers if c.alias}
    free_slots = [
        s for s in [*range(FIRST_SLOT, LAST_SLOT + 1), *range(3, FIRST_SLOT)] if (0, s) not in domain.occupied
    ]
    for slot in guest_slots(spec):
        devices = tuple(device.address for device in slot.devices)
        if domain.q35 and free:
            free_port = free.pop(0)
            bus, guest_slot = free_port.index, 0
            plan.ports.append(PortUse(bus, port_name(free_port), False, devices))
        elif domain.q35:
            if index > MAX_INDEX:
                raise VmError(f"{ref} has PCI controllers up to index {MAX_INDEX}; libvirt numbers no more.")
            # libvirt's own choice is chassis = index; the port follows the highest one in use.
            chassis = _first_free([index, *range(1, 256)], chassis_used, f"{ref} has no PCIe chassis number left")
            after = max(ports_used, default=FIRST_SLOT - 1) + 1
            port = _first_free(
                [*range(after, 256), *range(1, after)], ports_used, f"{ref} has no PCIe port number left"
            )
            chassis_used.add(chassis)
            ports_used.add(port)
            alias = mark(devices[0], aliases)
            aliases.add(alias)
            controller = root_port(holder, index, chassis=chassis, port=port, model_name=True)
            controller.find("target").set("port", f"0x{port:x}")  # type: ignore[union-attr]  # as libvirt writes it
            ET.SubElement(controller, "alias", {"name": alias})  # after <target>, where libvirt keeps it
            plan.controllers.append(controller)
            plan.ports.append(PortUse(index, alias, True, devices))
            bus, guest_slot = index, 0
            index += 1
        else:
            if not free_slots:
                raise VmError(
                    f"{ref} has no free slot left on its PCI bus 0.", hint="Detach a device it no longer needs."
                )
            bus, guest_slot = 0, free_slots.pop(0)
        plan.hostdevs += _slot_hostdevs(holder, slot, bus, guest_slot)
    return plan


def _first_free(candidates: list[int], used: set[int], refusal: str) -> int:
    for number in candidates:
        if number not in used:
            return number
    raise VmError(refusal + ".")


def _slot_hostdevs(holder: ET.Element, slot: GuestSlot, bus: int, guest_slot: int) -> list[ET.Element]:
    # x-vga only with SeaBIOS, through a domain-wide <qemu:override> (configgen.libvirt); prepare()
    # plans for OVMF, where the card's GOP driver needs no legacy VGA, so no alias is written.
    return [
        hostdev(holder, device, bus=bus, slot=guest_slot, function=function,
                multifunction=slot.multifunction and function == 0)
        for device, function in slot.functions
    ]  # fmt: skip


def live_placements(
    live: Domain, spec: VmSpec, plan: AttachPlan | None = None
) -> tuple[list[tuple[str, ET.Element]], list[str]]:
    """What can be hot-plugged into a running domain now: ([(host address, hostdev)], [why not, per card]).

    On q35 a card goes on the port ``plan`` gives it in the configuration when the running VM
    has that port free, so both agree; else on the first free port no other card is given."""
    plugs: list[tuple[str, ET.Element]] = []
    refused: list[str] = []
    holder = ET.Element("devices")
    ports = live.free_ports()
    given = {port.index for port in plan.ports} if plan else set()
    taken: set[tuple[int, int]] = set()
    for slot in guest_slots(spec):
        names = ", ".join(device.address for device in slot.devices)
        if all(live.hostdev(device.address) for device in slot.devices):
            continue
        if any(device.x_vga for device in slot.devices):
            refused.append(f"{names}: {PRIMARY_GPU}")
        elif slot.multifunction:
            refused.append(f"{names}: {MULTIFUNCTION}")
        elif not (live.q35 or live.i440fx):
            refused.append(f"{names}: machine {live.machine!r} is neither q35 nor i440fx")
        elif not ports:
            refused.append(f"{names}: {NO_PORT if live.q35 else NO_BRIDGE}")
        else:
            port = ports[0]
            if live.q35:
                wanted = plan.port_of(slot.devices[0].address) if plan else None
                port = next((p for p in ports if p.index == wanted), None) or next(
                    (p for p in ports if p.index not in given), port
                )
                ports.remove(port)
                where = (port.index, 0)
            else:
                where = (port.index, next(s for s in live.bridge_slots(port) if (port.index, s) not in taken))
                taken.add(where)
                if not [s for s in live.bridge_slots(port) if (port.index, s) not in taken]:
                    ports.pop(0)
            (element,) = _slot_hostdevs(holder, slot, *where)
            plugs.append((slot.devices[0].address, element))
    return plugs, refused


def _require_config(vm: Vm) -> str:
    if vm.kind != KIND:
        raise VmError(f"{vm.ref} is a {vm.kind} VM; this plans libvirt domains only.")
    if vm.config is None:
        raise VmError(f"{vm.ref}'s domain XML could not be read, so nothing can be planned for it.", hint=vm.detail)
    return vm.config


def vm_live_buses(vm: Vm) -> set[int]:
    """The buses a running VM has a host function on, as the snapshot knows them (its hostdevs' live addresses)."""
    return {PciAddress.parse(device.guest).bus for device in vm.devices if device.live and device.guest}


def plan_change(vm: Vm, prepared: Prepared) -> tuple[str, str]:
    """The inactive domain XML after the attach, and the change in words (the diff's label).

    From what the snapshot holds: the saved XML and, for a running VM, the live addresses of
    its host functions; the job plans again from the live XML itself."""
    text = _require_config(vm)
    plan = new_elements(parse_domain(text), prepared.spec, vm.ref, running=vm.running, live_buses=vm_live_buses(vm))
    return insert_devices(text, plan.controllers, plan.hostdevs), plan.doing


def plan_attach(vm: Vm, prepared: Prepared) -> str:
    """The inactive domain XML after the attach: the new root ports and hostdevs where libvirt writes them."""
    return plan_change(vm, prepared)[0]


@dataclass
class DetachPlan:
    """The inactive XML after a detach, and what becomes of each root port the leaving functions sat on."""

    after: str
    ports: list[PortFate]

    @property
    def removed(self) -> list[int]:
        return [fate.index for fate in self.ports if fate.removed]

    @property
    def doing(self) -> str:
        return "detach: " + "; ".join(fate.words() for fate in self.ports) if self.ports else "detach"


def detach_plan(
    text: str, addresses: list[str], *, live: Domain | None = None, card: list[str] | None = None
) -> DetachPlan:
    """``text`` without the hostdevs of ``addresses`` and without the root ports their attach added, now empty.

    A root port nothing marks as the wizard's stays: it may be one the OS installed in the
    guest knows, and a free port is where the next attach goes (a q35 VM cannot get a new one
    while it runs). ``live``: the running VM's XML; ``card``: functions leaving with them."""
    fates = after_detach(parse_domain(text), addresses, live, card)
    after = remove_hostdevs(text, addresses)
    removed = [fate.index for fate in fates if fate.removed]
    return DetachPlan(remove_controllers(after, removed) if removed else after, fates)


def plan_detach(vm: Vm, addresses: list[str]) -> str:
    """The inactive domain XML without the hostdevs of ``addresses`` (and the root ports :func:`detach_plan` takes)."""
    text = _require_config(vm)
    domain = parse_domain(text)
    for address in addresses:
        held = domain.hostdev(address)
        if held is None:
            raise VmError(f"{vm.ref} has no hostdev {address} in its configuration.")
        if held.interface:
            raise VmError(f"{vm.ref} holds {address} as a network interface (<interface type='hostdev'>), "
                          "which is taken out as one.", hint=f"virsh detach-interface {vm.id} hostdev --config")  # fmt: skip
    return detach_plan(text, addresses).after


def slot_mates(domain: Domain, addresses: list[str]) -> list[str]:
    """``addresses`` plus the hostdevs sharing a guest slot with one of them (the other functions of a card)."""
    slots = {h.guest.rsplit(".", 1)[0] for h in domain.hostdevs if h.host in addresses and h.guest}
    mates = [h.host for h in domain.hostdevs if h.guest and h.guest.rsplit(".", 1)[0] in slots]
    return list(dict.fromkeys([*addresses, *mates]))


# Proof ----------------------------------------------------------------------------------
def find_in_query_pci(reply: dict[str, Any], qdev_id: str) -> dict[str, Any] | None:
    """Where QMP ``query-pci`` shows the device QEMU knows as ``qdev_id``: guest bus, slot, function, parent bridge."""

    def walk(devices: list[dict[str, Any]], parent: str | None) -> dict[str, Any] | None:
        for device in devices:
            if device.get("qdev_id") == qdev_id:
                ids = device.get("id", {})
                return {"qdev_id": qdev_id, "bus": device.get("bus"), "slot": device.get("slot"),
                        "function": device.get("function"), "parent": parent,
                        "vendor_id": f"{ids.get('vendor', 0):04x}", "device_id": f"{ids.get('device', 0):04x}"}  # fmt: skip
            bridge = device.get("pci_bridge")
            if bridge:
                found = walk(bridge.get("devices", []), device.get("qdev_id") or None)
                if found:
                    return found
        return None

    for bus in reply.get("return", []):
        found = walk(bus.get("devices", []), None)
        if found:
            return found
    return None
