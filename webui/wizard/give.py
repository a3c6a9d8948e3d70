"""Step 5, "Give it to a VM": the VMs the worker found, and the change an attach would make.

Everything here comes from the latest snapshot: the VMs and their configurations were read
by the worker, and the diff is made by the same planner the worker runs, with the same
options (primary GPU, ROM file), so the page shows the change before any job runs. The
worker checks it all again and refuses when the VM's configuration changed since (the
fingerprint), or when the ROM file is not a sane file in a ROM directory on the host.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict

from passthrough.configgen.spec import VmSpec
from passthrough.errors import PassthroughError
from passthrough.pci.model import Inventory
from passthrough.vms import give
from passthrough.vms.model import Vm, VmInventory, config_diff
from passthrough.vms.romfile import PROXMOX_ROM_DIR, proxmox_rom
from passthrough.vms.validate import check
from webui.wizard.forms import AttachOptionsForm
from webui.wizard.views.common import error_text


@dataclass
class Plan:
    vm: Vm
    addresses: list[str]  # every function the attach gives, companions included
    diff: str | None  # None: the kind has no configuration text (a plain QEMU VM)
    live: str  # what happens in the running VM, in words
    refusal: str | None = None  # why the worker would refuse it; no Attach button then
    options: dict[str, Any] = field(default_factory=dict)  # primary_gpu, rom_file: what the Attach button sends
    notes: list[str] = field(default_factory=list)  # what those options do in this VM, in words


def display_card(inventory: Inventory, device: str) -> bool:
    """Whether ``device``'s card has a display controller (class 03xx): only then is "primary GPU" offered."""
    picked = inventory.device(device)
    if picked is None:
        return False
    card = picked.pci_address.slot_key
    return any(f.is_display for f in inventory.devices if f.pci_address.slot_key == card and not f.is_vf)


def options_form(data: QueryDict, inventory: Inventory, device: str) -> AttachOptionsForm:
    """The attach options as the page (GET, the preview) or the Attach button (POST) sent them."""
    return AttachOptionsForm(data, display=display_card(inventory, device))


def plan_for(
    inventory: Inventory, vms: VmInventory, vm: Vm, device: str, form: AttachOptionsForm | None = None
) -> Plan:
    refusal = form.refusal() if form is not None else None
    if refusal:
        return Plan(vm, [], None, "", refusal=refusal)
    options = form.options() if form is not None else {"primary_gpu": False, "rom_file": None}
    try:
        give.refuse_options(vm.kind, **options)
        prepared = check(inventory, vms, vm.ref, [device], **options)
        change = give.planned_change(vm, prepared)  # (the configuration after, the change in words)
    except PassthroughError as error:
        return Plan(vm, [], None, "", refusal=error_text(error), options=options)
    diff = config_diff(vm.ref, vm.config or "", *change) if change is not None else None
    live = live_words(vm, diff is not None, primary=options["primary_gpu"])
    return Plan(vm, prepared.addresses, diff, live, options=options, notes=option_words(vm, prepared.spec))


def option_words(vm: Vm, spec: VmSpec) -> list[str]:
    """What the primary GPU and the ROM file become in this VM's configuration."""
    notes = []
    primary = spec.primary
    if primary is not None and vm.kind == "libvirt":
        notes.append(
            f"Primary GPU {primary.address}: the attach plans for UEFI (OVMF), where the card's own firmware shows "
            "the boot screen, so the domain gets no x-vga line; to leave it no other display, set its emulated "
            "video to none (virsh edit: <model type='none'/>)."
        )
    elif primary is not None and vm.kind == "proxmox":
        notes.append(
            f"Primary GPU {primary.address}: x-vga=1 on its hostpci line; qemu-server then gives the VM no emulated "
            "display (unless its config sets vga:), so this card is its only screen."
        )
    rom = next((device for device in spec.devices if device.rom_file), None)
    if rom is not None and rom.rom_file and vm.kind == "libvirt":
        notes.append(f"ROM file: the guest runs {rom.rom_file} as the option ROM of {rom.address} (<rom file=…/>).")
    elif rom is not None and rom.rom_file and vm.kind == "proxmox":
        read = proxmox_rom(rom.rom_file)
        copy = "" if read == rom.rom_file else f"; copy {rom.rom_file} there before the VM starts"
        notes.append(
            f"ROM file: romfile={posixpath.basename(rom.rom_file)} on {rom.address}: qemu-server reads {read} "
            f"(only {PROXMOX_ROM_DIR}){copy}."
        )
    return notes


def live_words(vm: Vm, has_config: bool, *, primary: bool = False) -> str:
    if not vm.running:
        return f"{vm.name} is {vm.state}: the device is there from its next start."
    if vm.kind == "proxmox":
        return f"{vm.name} is running: Proxmox applies hostpci changes at the VM's next start, not while it runs."
    if primary:
        return f"{vm.name} is running, and a primary GPU is never hot-plugged: it is there from the VM's next start."
    if vm.hotplug:
        then = " It goes into the saved configuration for the next start." if has_config else ""
        return f"{vm.name} is running, but the device cannot be hot-plugged now: {vm.hotplug}{then}"
    return f"{vm.name} is running: the device is hot-plugged into it now, and the job shows where the guest sees it."


def chosen_vm(vms: VmInventory, reference: str) -> Vm | None:
    if not reference:
        return None
    return next((vm for vm in vms.vms if vm.ref == reference), None)
