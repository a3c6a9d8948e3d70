"""What every attach checks before it changes a VM, whatever the kind of VM.

:func:`prepare` takes what a job or the shell hands over (JSON primitives, so anything)
and returns the VM and the :class:`~passthrough.configgen.VmSpec` of what goes into it: the
picked functions plus everything that must move with them (the rest of their IOMMU
group, the other functions of the same card), as the config generators place them. It
refuses, before anything is written: a malformed address, an unknown device, IOMMU off,
a group with nothing passable, a host-critical function without its confirmation, a
function another VM already has (naming that VM), a configuration that changed since the
user looked at the diff, and a ROM file that is not a sane regular file inside the
directories the hypervisors read ROMs from (:mod:`passthrough.vms.romfile`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from passthrough.configgen import VmSpec, build_spec
from passthrough.host import HostTree
from passthrough.ops.errors import GroupNotViable, InvalidRequest, IommuOff
from passthrough.ops.interlock import GIVE_TO_VM, check_action
from passthrough.ops.validate import parse_address, parse_confirm, require_device
from passthrough.pci.address import PciAddress
from passthrough.pci.isolation import describe
from passthrough.pci.model import Inventory, PciFunction
from passthrough.pci.scan import scan
from passthrough.vms.model import ConfigChanged, DeviceHeldElsewhere, Vm, VmInventory
from passthrough.vms.romfile import parse_rom_file, require_proxmox_rom, require_rom_file

MAX_DEVICES = 32


@dataclass
class Prepared:
    vm: Vm
    inventory: Inventory
    spec: VmSpec  # what goes into the VM, in guest-slot order (configgen.layout.guest_slots)
    picked: list[str]  # the addresses asked for
    confirmed: list[str]  # host-critical functions the confirmation covered

    @property
    def addresses(self) -> list[str]:
        return [device.address for device in self.spec.devices]


def parse_addresses(value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not value:
        raise InvalidRequest("Name at least one PCI function, for example 0000:01:00.0.")
    if len(value) > MAX_DEVICES:
        raise InvalidRequest(f"At most {MAX_DEVICES} functions go into one VM at once; {len(value)} were named.")
    # The short form (01:00.0) is domain 0000, as lspci prints it.
    return list(dict.fromkeys(str(PciAddress.parse(parse_text(item))) for item in value))


def parse_text(value: Any) -> str:
    if not isinstance(value, str):
        return parse_address(value)  # refuses it, saying what a PCI address looks like
    return value


def parse_live(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"live must be true, false or unset, not {value!r}.")
    return value


def parse_primary_gpu(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"primary_gpu must be true or false, not {value!r}.")
    return value


def require_vm(vms: VmInventory, reference: Any) -> Vm:
    if not isinstance(reference, str) or not 0 < len(reference) <= 300 or "\x00" in reference:
        raise InvalidRequest("Name the VM: a libvirt domain, a Proxmox VMID or qemu:<QMP socket path>.")
    return vms.find(reference.strip())


def require_fingerprint(vm: Vm, expected: Any) -> None:
    """Refuse when the diff the user approved was made from another version of the VM's configuration."""
    if expected is None:
        return
    if expected != vm.fingerprint:
        raise ConfigChanged(
            f"{vm.ref}'s configuration changed since the diff was made from it.",
            hint="Look at the new diff and attach again.",
        )


def prepare(
    tree: HostTree,
    vms: VmInventory,
    reference: Any,
    addresses: Any,
    *,
    confirm: Any = None,
    fingerprint: Any = None,
    primary_gpu: bool = False,
    rom_file: str | None = None,
) -> Prepared:
    """The VM and the devices going into it, checked against the live host and every VM on it.

    A ``rom_file`` must pass :func:`passthrough.vms.romfile.require_rom_file` on ``tree`` first
    (for a Proxmox VM, also the copy in /usr/share/kvm that qemu-server reads, when it is there)."""
    primary = parse_primary_gpu(primary_gpu)
    rom = require_rom_file(tree, rom_file)
    prepared = check(
        scan(tree), vms, reference, addresses, confirm=confirm, fingerprint=fingerprint, primary_gpu=primary,
        rom_file=rom, tree=tree,
    )  # fmt: skip
    if rom is not None and prepared.vm.kind == "proxmox":
        require_proxmox_rom(tree, rom)
    return prepared


def check(
    inventory: Inventory,
    vms: VmInventory,
    reference: Any,
    addresses: Any,
    *,
    confirm: Any = None,
    fingerprint: Any = None,
    primary_gpu: bool = False,
    rom_file: str | None = None,
    tree: HostTree | None = None,
) -> Prepared:
    """:func:`prepare` on an inventory already read: the worker's, just scanned, or a page's snapshot.

    ``tree`` (the host the inventory came from) adds the BAR sizes; the page has none and
    the plan it shows does not depend on them. A ``rom_file`` is checked as written here (the
    page knows no files); :func:`prepare` also checks the file it names.
    """
    picked = parse_addresses(addresses)
    confirmation = parse_confirm(confirm)
    primary_gpu, rom_file = parse_primary_gpu(primary_gpu), parse_rom_file(rom_file)
    vm = require_vm(vms, reference)
    for address in picked:
        require_passable(inventory, require_device(inventory, address))
    spec = build_spec(
        inventory,
        picked,
        name=spec_name(vm.name),
        machine="q35" if vm.q35 or vm.machine is None else "i440fx",
        firmware="ovmf",
        primary_gpu=primary_gpu,
        rom_file=rom_file,
        tree=tree,
    )
    everything = [device.address for device in spec.devices]
    permission = check_action(inventory, GIVE_TO_VM, everything, confirmation)
    for address in everything:
        require_not_held(inventory, vms, address, besides=vm.ref)
    require_fingerprint(vm, fingerprint)
    return Prepared(vm=vm, inventory=inventory, spec=spec, picked=picked, confirmed=permission.confirmed)


def spec_name(name: str, otherwise: str = "vm") -> str:
    """The VM's name as the config generators accept one (a domain may be called "Windows 11"):
    the spec's name labels nothing an attach writes, so a name it refuses must not stop one."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:63]
    return cleaned or otherwise


def require_not_held(inventory: Inventory, vms: VmInventory, address: str, *, besides: str | None) -> None:
    """Refuse a function a VM other than ``besides`` already has, naming that VM."""
    held = vms.holder(address, besides=besides)
    if held is not None:
        other, device = held
        where = "is running with it" if device.live else "has it in its configuration"
        raise DeviceHeldElsewhere(
            f"{describe(inventory.require(address))} already belongs to {other.ref} ({other.state}), which {where}.",
            hint=f"Detach it from {other.name} first: two VMs cannot own one function.",
        )


def require_passable(inventory: Inventory, function: PciFunction) -> None:
    """The IOMMU is on, the function has a group, and the group has endpoints a VM can take."""
    if not inventory.groups:
        raise IommuOff(
            "The IOMMU is off: the kernel made no IOMMU groups, so no VM can be given a device.",
            hint="Enable VT-d (Intel) or AMD-Vi/IOMMU in the firmware setup, add intel_iommu=on on Intel, and reboot.",
        )
    group = inventory.group(function.iommu_group)
    if group is None:
        raise IommuOff(
            f"{describe(function)} has no IOMMU group, so vfio cannot isolate it.",
            hint="The IOMMU does not cover this device; check the firmware's IOMMU and ACS settings.",
        )
    if not group.endpoints:
        raise GroupNotViable(
            f"IOMMU group {group.id} cannot be passed through: " + " ".join(group.reasons),
            hint="Pick the device behind the bridge instead; its own group is the one to pass.",
        )
