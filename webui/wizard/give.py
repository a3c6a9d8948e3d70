"""Step 5, "Give it to a VM": the VMs the worker found, and the change an attach would make.

Everything here comes from the latest snapshot: the VMs and their configurations were read
by the worker, and the diff is made by the same planner the worker runs, so the page shows
the change before any job runs. The worker checks it all again and refuses when the VM's
configuration changed since (the fingerprint).
"""

from __future__ import annotations

from dataclasses import dataclass

from passthrough.errors import PassthroughError
from passthrough.pci.model import Inventory
from passthrough.vms import give
from passthrough.vms.model import Vm, VmInventory, config_diff
from passthrough.vms.validate import check
from webui.wizard.views.common import error_text


@dataclass
class Plan:
    vm: Vm
    addresses: list[str]  # every function the attach gives, companions included
    diff: str | None  # None: the kind has no configuration text (a plain QEMU VM)
    live: str  # what happens in the running VM, in words
    refusal: str | None = None  # why the worker would refuse it; no Attach button then


def plan_for(inventory: Inventory, vms: VmInventory, vm: Vm, device: str) -> Plan:
    try:
        prepared = check(inventory, vms, vm.ref, [device])
        change = give.planned_change(vm, prepared)  # (the configuration after, the change in words)
    except PassthroughError as error:
        return Plan(vm, [], None, "", refusal=error_text(error))
    diff = config_diff(vm.ref, vm.config or "", *change) if change is not None else None
    return Plan(vm, prepared.addresses, diff, live_words(vm, diff is not None))


def live_words(vm: Vm, has_config: bool) -> str:
    if not vm.running:
        return f"{vm.name} is {vm.state}: the device is there from its next start."
    if vm.kind == "proxmox":
        return f"{vm.name} is running: Proxmox applies hostpci changes at the VM's next start, not while it runs."
    if vm.hotplug:
        then = " It goes into the saved configuration for the next start." if has_config else ""
        return f"{vm.name} is running, but the device cannot be hot-plugged now: {vm.hotplug}{then}"
    return f"{vm.name} is running: the device is hot-plugged into it now, and the job shows where the guest sees it."


def chosen_vm(vms: VmInventory, reference: str) -> Vm | None:
    if not reference:
        return None
    return next((vm for vm in vms.vms if vm.ref == reference), None)
