"""Proxmox VE VMs: read ``/etc/pve/qemu-server/<vmid>.conf``, give them devices with ``qm set``, take them back.

A device goes in as the ``hostpciN`` line the config generator writes
(:func:`passthrough.configgen.proxmox.hostpci_lines`: ``bb:dd`` for a whole card, ``pcie=1``
on q35, ``x-vga=1`` for a primary GPU, ``romfile=``) at the lowest free index of 0-15.
Every change goes through ``qm set`` (never by writing the file, so pmxcfs and the
cluster see it as any other change), is verified by reading the ``.conf`` back, and is
kept as before/after entries for :func:`undo`. qemu-server hot-plugs no ``hostpci``: on a
running VM ``qm set`` leaves the change in ``[PENDING]`` until the VM is stopped and
started again, and the result says so instead of claiming the VM has the device now.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import asdict
from functools import partial
from typing import Any

from passthrough.configgen.proxmox import MAX_HOSTPCI, hostpci_lines
from passthrough.host import HostTree
from passthrough.ops.commands import runner_for
from passthrough.ops.errors import InvalidRequest, OperationFailed, VerificationFailed
from passthrough.ops.flow import carry_out
from passthrough.ops.result import UNCHANGED, OperationResult, Progress, Recorder
from passthrough.vms import pveconf
from passthrough.vms.model import ConfigChanged, UnknownVm, Vm, VmError, VmInventory, config_plan, fingerprint
from passthrough.vms.pvenode import KIND, NO_HOTPLUG, read, read_conf, read_vm
from passthrough.vms.validate import Prepared, parse_addresses, parse_live, prepare, require_vm

__all__ = ["read", "plan_attach", "attach", "detach", "undo"]
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9:;.,=_/+\-]{1,512}$")


# Planning -----------------------------------------------------------------------------
def _require_proxmox(vm: Vm) -> None:
    if vm.kind != KIND:
        raise InvalidRequest(f"{vm.ref} is a {vm.kind} VM; this backend changes Proxmox VE VMs only.")
    if vm.config is None:
        raise VmError(f"{vm.ref}'s config could not be read, so nothing can be planned for it.", hint=vm.detail)


def new_entries(vm: Vm, prepared: Prepared) -> dict[str, str]:
    """The hostpciN lines the generator writes for ``prepared``, each at the lowest free index."""
    _require_proxmox(vm)
    spec = prepared.spec
    if spec.uses_pcie and not vm.q35:
        raise VmError(
            f"{vm.ref} ({vm.name}) has machine {vm.machine} (i440fx), which has no PCI Express bus: pcie=1 needs "
            'machine q35, and qemu-server refuses to start the VM otherwise ("q35 machine model is not enabled").',
            hint="Attach without PCIe placement, or change the VM's machine to q35 first (qm set VMID --machine q35).",
        )
    lines, _ = hostpci_lines(prepared.inventory, spec)
    values = [line.split(": ", 1)[1] for line in lines]
    used = {int(key[7:]) for key in pveconf.parse(str(vm.config)).hostpci_keys()}
    free = [index for index in range(MAX_HOSTPCI) if index not in used]
    if len(values) > len(free):
        raise VmError(
            f"{vm.ref} ({vm.name}) has {len(free)} free hostpci entries and this needs {len(values)}: Proxmox allows "
            f"hostpci0 to hostpci{MAX_HOSTPCI - 1}, and {len(used)} of them are in use.",
            hint="Detach a device the VM no longer needs first.",
        )
    return {f"hostpci{index}": value for index, value in zip(free, values, strict=False)}


def plan_attach(vm: Vm, prepared: Prepared) -> str:
    """The .conf after ``qm set`` adds the devices: in the main section, or in [PENDING] while it runs.

    Each line goes where qemu-server's sorted write puts it; a hand-written .conf whose keys
    are out of that order is rewritten in it by qm, which the diff of the attach shows.
    """
    entries = new_entries(vm, prepared)
    return pveconf.insert(str(vm.config), "pending" if vm.running else "main", entries)


# Acting -------------------------------------------------------------------------------
def _require_qm(tree: HostTree) -> None:
    if not (tree.is_live or callable(getattr(tree, "run_command", None))):
        raise VmError(
            f"{tree.root} is a captured tree, not this host: qm would change the wrong machine, so nothing is changed.",
            hint="Run it on the Proxmox VE node itself (the worker there), where qm changes the VM.",
        )


def _refuse_live(vm: Vm, live: bool | None) -> None:
    if live:
        raise VmError(f"{vm.ref} ({vm.name}) cannot change devices live: {NO_HOTPLUG}.",
                      hint="Leave live unset or off: the change goes into the config.")  # fmt: skip


def attach(
    tree: HostTree, vms: VmInventory, reference: str, addresses: list[str], *, live: bool | None = None,
    confirm: str | None = None, fingerprint: str | None = None, progress: Progress | None = None,
    primary_gpu: bool = False, rom_file: str | None = None, **connection: Any,
) -> OperationResult:  # fmt: skip
    """Add the functions (and what must move with them) to a Proxmox VM's config with one ``qm set``."""
    result = OperationResult("vm_attach", parameters={"vm": reference, "addresses": addresses, "live": live})
    recorder = Recorder(result, progress)
    with recorder.step("validate", reference if isinstance(reference, str) else None) as step:
        wanted_live = parse_live(live)
        prepared = prepare(tree, vms, reference, addresses, confirm=confirm, fingerprint=fingerprint,
                           primary_gpu=primary_gpu, rom_file=rom_file)  # fmt: skip
        vm = prepared.vm
        _require_proxmox(vm)
        _refuse_live(vm, wanted_live)
        _require_qm(tree)
        has = [address for address in prepared.addresses if _configured(vm, address)]
        entries = {} if len(has) == len(prepared.addresses) else new_entries(vm, prepared)
        if has and entries:
            raise VmError(f"{vm.ref} ({vm.name}) already has {', '.join(has)} of the {len(prepared.addresses)} "
                          f"functions that go together here ({', '.join(prepared.addresses)}).",
                          hint="Detach those first, then attach the whole device again.")  # fmt: skip
        step.detail = ", ".join(f"{key}: {value}" for key, value in entries.items()) or "already in the config"
    result.targets = prepared.addresses
    result.parameters.update(vm=vm.ref, addresses=prepared.addresses, confirmed=prepared.confirmed)
    if not entries:
        result.outcome = UNCHANGED
        result.state_before = result.state_after = _state(vm)
        return result
    for device in prepared.spec.devices:
        rom = device.rom_file and posixpath.basename(device.rom_file)
        if rom and not tree.is_file(f"usr/share/kvm/{rom}"):
            result.warnings.append(f"qemu-server reads romfile= from /usr/share/kvm only, and /usr/share/kvm/{rom} "
                                   f"is not there: copy {device.rom_file} to it before the VM starts.")  # fmt: skip
    return _change(tree, result, recorder, vm, dict(entries), "attach")


def detach(
    tree: HostTree, vms: VmInventory, reference: str, addresses: list[str], *, live: bool | None = None,
    progress: Progress | None = None, **connection: Any,
) -> OperationResult:  # fmt: skip
    """Remove the hostpci entries that hold the functions (a whole card goes with any of its functions)."""
    result = OperationResult("vm_detach", parameters={"vm": reference, "addresses": addresses, "live": live})
    recorder = Recorder(result, progress)
    with recorder.step("validate", reference if isinstance(reference, str) else None) as step:
        picked = parse_addresses(addresses)
        wanted_live = parse_live(live)
        vm = require_vm(vms, reference)
        _require_proxmox(vm)
        _refuse_live(vm, wanted_live)
        _require_qm(tree)
        configured = {device.host: device for device in vm.devices if device.config}
        missing = [address for address in picked if address not in configured and vm.holds(address) is None]
        if missing:
            has = ", ".join(f"{device.host} ({device.alias})" for device in configured.values()) or "no host device"
            raise VmError(f"{vm.ref} ({vm.name}) does not have {', '.join(missing)}: its config holds {has}.",
                          hint="`manage.py vm list` shows which VM holds what.")  # fmt: skip
        keys = sorted({str(configured[address].alias) for address in picked if address in configured})
        along = [device.host for device in configured.values() if device.alias in keys and device.host not in picked]
        if along:
            result.warnings.append(f"{', '.join(along)} leave{'s' if len(along) == 1 else ''} too: "
                                   f"{', '.join(keys)} passes the whole device, one entry per card.")  # fmt: skip
        step.detail = ", ".join(keys) or "already leaving at the next start"
    result.targets = picked
    result.parameters.update(vm=vm.ref, addresses=picked)
    if not keys:
        result.outcome = UNCHANGED
        result.state_before = result.state_after = _state(vm)
        return result
    return _change(tree, result, recorder, vm, {key: None for key in keys}, "detach")


def undo(
    tree: HostTree, record: dict[str, Any], *, force: bool = False, progress: Progress | None = None,
    **connection: Any,
) -> OperationResult:  # fmt: skip
    """Put the hostpci entries an attach or detach changed back as they were, with ``qm set``."""
    action = record.get("action") if isinstance(record, dict) else None
    result = OperationResult(f"undo_{action}", parameters={"record": record, "force": force})
    recorder = Recorder(result, progress)
    with recorder.step("validate", "undo record") as step:
        vmid, before, _ = _parse_record(record)
        if not isinstance(force, bool):
            raise InvalidRequest("force must be true or false.")
        _require_qm(tree)
        text = read_conf(tree, vmid)
        if text is None:
            raise UnknownVm(
                f"proxmox:{vmid} has no /{pveconf.CONF_DIR}/{vmid}.conf any more; there is nothing to undo."
            )
        if fingerprint(text) != record.get("fingerprint") and not force:
            raise ConfigChanged(
                f"proxmox:{vmid}'s config changed after the {str(action)[3:]}; undoing it now would act on a config "
                "nobody has seen.",
                hint="Look at the VM's config, or undo with force to put back only the hostpci entries.",
            )
        vm = read_vm(tree, vmid)
        conf = pveconf.parse(text)
        changes = {key: value for key, value in before.items() if conf.effective(key) != value}
        step.detail = ", ".join(f"{key} → {value or 'removed'}" for key, value in changes.items()) or "nothing to undo"
    result.targets = [vm.ref]
    if not changes:
        result.outcome = UNCHANGED
        result.state_before = result.state_after = _state(vm)
        return result
    return _change(tree, result, recorder, vm, changes, "undo")


def _configured(vm: Vm, address: str) -> bool:
    held = vm.holds(address)
    return held is not None and held.config


def _parse_record(record: Any) -> tuple[str, dict[str, str | None], dict[str, str | None]]:
    if (
        not isinstance(record, dict)
        or record.get("kind") != KIND
        or record.get("action") not in ("vm_attach", "vm_detach")
    ):
        raise InvalidRequest(
            "This is not the undo record of a Proxmox VM change.", hint="Use the record its job returned."
        )
    vmid = record.get("vmid")
    if not isinstance(vmid, str) or not re.fullmatch(r"[1-9]\d{2,8}", vmid):
        raise InvalidRequest(f"The undo record names no VMID ({vmid!r}).")
    entries = []
    for name in ("before", "after"):
        value = record.get(name)
        if (
            not isinstance(value, dict)
            or not value
            or any(
                not (isinstance(key, str) and pveconf.HOSTPCI.match(key) and int(key[7:]) < MAX_HOSTPCI)
                or not (item is None or (isinstance(item, str) and _SAFE_VALUE.match(item)))
                for key, item in value.items()
            )
        ):
            raise InvalidRequest(f"The undo record's {name!r} is not a set of hostpciN entries.")
        entries.append(value)
    return vmid, entries[0], entries[1]


def _state(vm: Vm) -> dict[str, Any]:
    return {"vm": vm.ref, "state": vm.state, "devices": [asdict(device) for device in vm.devices],
            "fingerprint": vm.fingerprint}  # fmt: skip


def _qm_set(vmid: str, changes: dict[str, str | None]) -> list[str]:
    argv = ["qm", "set", vmid]
    for key, value in sorted(changes.items()):
        if value is not None:
            argv += [f"--{key}", value]
    removed = [key for key, value in sorted(changes.items()) if value is None]
    return argv + (["--delete", ",".join(removed)] if removed else [])


def _change(
    tree: HostTree, result: OperationResult, recorder: Recorder, vm: Vm, changes: dict[str, str | None], doing: str
) -> OperationResult:
    """Run one ``qm set`` for ``changes`` (None: remove), verify it from the .conf, put it back on failure."""
    run = runner_for(tree)
    with recorder.step("snapshot", vm.ref):
        before_text = read_conf(tree, vm.id)
        if before_text != vm.config:
            raise ConfigChanged(f"{vm.ref}'s config changed since it was read; nothing was changed.",
                                hint="Read the VMs again and look at the new diff.")  # fmt: skip
        conf = pveconf.parse(str(before_text))
        before = {key: conf.effective(key) for key in changes}
        result.state_before = _state(vm)
    read_state = partial(_read_state, tree, vm.id)

    def act() -> None:
        _qm(run, recorder, vm, changes)
        with recorder.step("verify", vm.ref) as step:
            now = pveconf.parse(read_conf(tree, vm.id) or "")
            wrong = {key: now.effective(key) for key, value in changes.items() if now.effective(key) != value}
            if wrong:
                raise VerificationFailed(
                    f"After qm set, {vm.ref}'s config reads {wrong} instead of {changes}.",
                    path=tree.path(f"{pveconf.CONF_DIR}/{vm.id}.conf"),
                )
            step.detail = "the config the next start uses has " + ", ".join(
                f"{key}: {value}" if value else f"no {key}" for key, value in changes.items()
            )

    def put_back() -> list:
        return [partial(_put_back, tree, run, recorder, vm, before)]

    carry_out(result, act=act, undo=put_back, read_state=read_state, doing=f"Changing {vm.ref}'s hostpci entries")
    after_text = read_conf(tree, vm.id)
    if result.ok and after_text is not None:
        after = pveconf.parse(after_text)
        result.plan = config_plan(vm.ref, str(before_text), after_text, doing)
        if doing != "undo":
            result.undo = {"action": f"vm_{doing}", "kind": KIND, "vm": vm.ref, "vmid": vm.id, "before": before,
                           "after": dict(changes), "fingerprint": fingerprint(after_text)}  # fmt: skip
        waiting = [key for key in changes if key in after.pending or key in after.pending_delete]
        if waiting:
            result.warnings.append(
                f"{vm.ref} ({vm.name}) is running and keeps the devices it started with: {NO_HOTPLUG}. "
                f"{', '.join(waiting)} wait{'s' if len(waiting) == 1 else ''} in [PENDING]."
            )
    return result


def _read_state(tree: HostTree, vmid: str) -> dict[str, Any]:
    return _state(read_vm(tree, vmid))


def _put_back(tree: HostTree, run: Any, recorder: Recorder, vm: Vm, before: dict[str, str | None]) -> None:
    now = pveconf.parse(read_conf(tree, vm.id) or "")
    changed = {key: value for key, value in before.items() if now.effective(key) != value}
    if changed:
        _qm(run, recorder, vm, changed, step="rollback")


def _qm(run: Any, recorder: Recorder, vm: Vm, changes: dict[str, str | None], step: str = "qm_set") -> None:
    argv = _qm_set(vm.id, changes)
    with recorder.step(step, vm.ref, " ".join(argv)) as recorded:
        answer = run(argv)
        if not answer.ok:
            raise OperationFailed(
                answer.summary, hint="These are qm's own words; the rollback step says what was put back."
            )
        said = (answer.stdout + answer.stderr).strip().splitlines()
        recorded.detail = " ".join(argv) + (f": {' / '.join(said[-3:])}" if said else "")
