"""Persistence: binding at boot by address, the kernel command line, the initramfs.

Binding at boot is by *address*, so one of two cards with the same vendor:device ids can
stay with the host (``vfio-pci.ids=`` would take both). Three pieces work together:

* ``/etc/udev/rules.d/90-passthrough-wizard-vfio.rules`` sets ``driver_override`` when each
  function is added (hot-plug, a rescan, and every boot where the native driver loads late);
* ``/etc/modprobe.d/passthrough-wizard-vfio.conf`` makes each native driver's module pull
  vfio-pci in first (``softdep`` takes the module, read from the driver's ``module`` link:
  xhci_hcd comes from xhci_pci, nvidia-gpu from i2c_nvidia_gpu), and has vfio-pci's own
  ``install`` command set ``driver_override`` for the same addresses before the module
  loads. modprobe.d is copied into the initramfs, so this also holds when the native driver
  loads from there, before any udev rule of ours;
* the vfio modules are listed for the initramfs, which is then rebuilt.

Each ``plan_*`` writes nothing and returns the diff; ``apply_*`` writes it with backups and
returns an :class:`OperationResult` whose ``undo`` is what ``undo_*`` takes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from passthrough.boot import loader as bootconfig
from passthrough.boot.cmdline import validate as validate_parameters
from passthrough.host import HostTree
from passthrough.ops.commands import RunCommand, runner_for
from passthrough.ops.errors import BootConfigUnsupported, FileChangedSinceApply, InvalidRequest
from passthrough.ops.files import (
    FileChange,
    PersistencePlan,
    apply_plan,
    change,
    parse_undo_record,
    read_text,
    undo_record,
)
from passthrough.ops.interlock import BIND_AT_BOOT, check_action
from passthrough.ops.modules import module_of
from passthrough.ops.result import OperationResult, Progress, Recorder
from passthrough.ops.sysfs import VFIO
from passthrough.ops.validate import (
    parse_address,
    parse_confirm,
    parse_driver_name,
    require_device,
    require_endpoints,
    require_group,
)
from passthrough.pci.scan import scan

RULES_FILE = "etc/udev/rules.d/90-passthrough-wizard-vfio.rules"
MODPROBE_FILE = "etc/modprobe.d/passthrough-wizard-vfio.conf"
INITRAMFS_MODULES = ["vfio", "vfio_iommu_type1", "vfio_pci"]
_RULE = re.compile(r'^ACTION=="add", SUBSYSTEM=="pci", KERNEL=="([0-9a-f:.]+)", ATTR\{driver_override\}="vfio-pci"$')
_NATIVE_NOTE = re.compile(r"^# ([0-9a-f:.]+): native driver (\S+)$")
_HEADER = "# Written by Passthrough Wizard: these PCI functions bind to vfio-pci at boot, by address.\n"


# What is persisted now ---------------------------------------------------------------------
def persisted_bindings(tree: HostTree) -> dict[str, str | None]:
    """{address: native driver or None} as the rules file records them."""
    natives: dict[str, str | None] = {}
    bound: dict[str, str | None] = {}
    for line in (read_text(tree, RULES_FILE) or "").splitlines():
        note = _NATIVE_NOTE.match(line)
        if note:
            natives[note.group(1)] = None if note.group(2) == "unknown" else note.group(2)
        rule = _RULE.match(line)
        if rule:
            bound[rule.group(1)] = natives.get(rule.group(1))
    return bound


def render_rules(bindings: dict[str, str | None]) -> str | None:
    if not bindings:
        return None
    lines = [_HEADER, "# Remove it (or undo the change in the web UI) and reboot to give them back.\n"]
    for address in sorted(bindings):
        lines.append(f"# {address}: native driver {bindings[address] or 'unknown'}\n")
        lines.append(f'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="{address}", ATTR{{driver_override}}="vfio-pci"\n')
    return "".join(lines)


def render_modprobe(bindings: dict[str, str | None], modules: list[str]) -> str | None:
    """The modprobe.d file: a softdep for each native driver's module, and vfio-pci's install hook."""
    if not bindings:
        return None
    addresses = " ".join(sorted(bindings))
    lines = [_HEADER]
    lines += [f"softdep {module} pre: vfio-pci\n" for module in sorted(set(modules))]
    lines.append(
        "install vfio-pci for a in "
        f"{addresses}; do f=/sys/bus/pci/devices/$a/driver_override; [ -w $f ] && echo vfio-pci > $f; done; "
        "/sbin/modprobe --ignore-install vfio-pci $CMDLINE_OPTS\n"
    )
    return "".join(lines)


def native_modules(tree: HostTree, bindings: dict[str, str | None]) -> tuple[list[str], list[str]]:
    """The modules of the native drivers (softdep takes a module, not a driver), and notes on those not known."""
    modules, notes = [], []
    for driver in sorted({driver for driver in bindings.values() if driver and driver != VFIO}):
        module = module_of(tree, driver)
        if module is not None:
            modules.append(module)
            continue
        addresses = ", ".join(sorted(address for address, native in bindings.items() if native == driver))
        notes.append(
            f"The module of {driver} (the native driver of {addresses}) is not known: this host has no "
            f"/sys/bus/pci/drivers/{driver}/module link and no module of that name, so no softdep is written "
            f"for it. `readlink /sys/bus/pci/drivers/{driver}/module` on the host names it; add "
            "`softdep MODULE pre: vfio-pci` in a file of your own in /etc/modprobe.d."
        )
    return modules, notes


# Planning -------------------------------------------------------------------------------
def _parse_addresses(addresses: Any) -> list[str]:
    if isinstance(addresses, str):
        addresses = [addresses]
    if not isinstance(addresses, list) or not addresses or len(addresses) > 64:
        raise InvalidRequest("Give one or more PCI addresses (a list of at most 64).")
    return sorted({parse_address(address) for address in addresses})


def _parse_natives(value: Any) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("native_drivers must map addresses to driver names.")
    return {
        parse_address(address): None if driver is None else parse_driver_name(driver)
        for address, driver in value.items()
    }


def _initramfs_change(tree: HostTree, tool: bootconfig.InitramfsTool) -> FileChange | None:
    edit = bootconfig.early_load_edit(tree, INITRAMFS_MODULES, tool)
    return None if edit is None else change(edit.path, edit.before, edit.after)


def plan_persist_binding(
    tree: HostTree, addresses: Any, *, native_drivers: Any = None, confirm: Any = None
) -> PersistencePlan:
    """Bind the groups of ``addresses`` to vfio-pci at every boot. Writes nothing."""
    wanted = _parse_addresses(addresses)
    natives = _parse_natives(native_drivers)
    confirmation = parse_confirm(confirm)
    inventory = scan(tree)
    endpoints: list[str] = []
    for address in wanted:
        group = require_group(tree, inventory, require_device(inventory, address))
        endpoints += [endpoint for endpoint in require_endpoints(tree, group) if endpoint not in endpoints]
    check_action(inventory, BIND_AT_BOOT, endpoints, confirmation)
    plan = PersistencePlan("persist_binding", sorted(endpoints))
    bindings = persisted_bindings(tree)
    for address in endpoints:
        current = inventory.device(address)
        if address in natives and natives[address] is None:
            # The caller knows it had no driver before it went to vfio-pci: nothing to softdep.
            plan.notes.append(f"{address} had no driver on the host, so no softdep is needed for it.")
            bindings[address] = None
            continue
        native = natives.get(address) or bindings.get(address) or (current.driver if current else None)
        if native == VFIO:
            plan.notes.append(
                f"The native driver of {address} is not known (it is on vfio-pci now); no softdep is written for it."
            )
            native = None
        elif native is None:
            plan.notes.append(f"{address} has no driver on the host, so no softdep is needed for it.")
        bindings[address] = native
    return _binding_plan(tree, plan, bindings)


def plan_unpersist_binding(tree: HostTree, addresses: Any) -> PersistencePlan:
    """Stop binding ``addresses`` at boot (the vfio modules stay in the initramfs). Writes nothing.

    A group goes to vfio-pci whole, so it stops whole too: the other functions of the group
    (and a card's companions) that are bound at boot are taken along, and the plan says so.
    Left behind, they would keep half a card on vfio-pci at the next boot.
    """
    wanted = _parse_addresses(addresses)
    bindings = persisted_bindings(tree)
    inventory = scan(tree)
    along: list[str] = []
    for address in wanted:
        group = inventory.group_of(address)
        for other in group.move_together if group is not None else []:
            if other in bindings and other not in wanted and other not in along:
                along.append(other)
    plan = PersistencePlan("unpersist_binding", [address for address in [*wanted, *along] if address in bindings])
    for address in wanted:
        if address not in bindings:
            plan.notes.append(f"{address} is not bound at boot by Passthrough Wizard.")
    for other in along:
        plan.notes.append(f"{other} stops being bound at boot too: it goes to a VM together with {', '.join(wanted)}.")
    for address in [*wanted, *along]:
        bindings.pop(address, None)
    return _binding_plan(tree, plan, bindings)


def _binding_plan(tree: HostTree, plan: PersistencePlan, bindings: dict[str, str | None]) -> PersistencePlan:
    tool = bootconfig.detect_initramfs_tool(tree)
    modules, unknown = native_modules(tree, bindings)
    plan.notes += unknown
    candidates = [
        change(RULES_FILE, read_text(tree, RULES_FILE), render_rules(bindings)),
        change(MODPROBE_FILE, read_text(tree, MODPROBE_FILE), render_modprobe(bindings, modules)),
    ]
    if bindings:
        candidates.append(_initramfs_change(tree, tool))
    plan.changes = [item for item in candidates if item is not None]
    for name in tree.listdir("etc/modprobe.d"):
        text = read_text(tree, f"etc/modprobe.d/{name}") or ""
        if name.endswith(".conf") and f"etc/modprobe.d/{name}" != MODPROBE_FILE:
            if re.search(r"^\s*install\s+vfio[-_]pci\b", text, re.MULTILINE):
                plan.notes.append(
                    f"/etc/modprobe.d/{name} has its own `install vfio-pci` line; modprobe uses only one."
                )
            if re.search(r"^\s*options\s+vfio[-_]pci\s.*\bids=", text, re.MULTILINE):
                plan.notes.append(
                    f"/etc/modprobe.d/{name} binds by id (options vfio-pci ids=...), which takes every card with those ids."
                )
    if plan.changes:
        if tool.rebuild_command:
            plan.commands.append(tool.rebuild_command)
        else:
            plan.notes.append(
                "No initramfs generator was found; the binding takes effect from the root filesystem only."
            )
    return plan


def plan_kernel_cmdline(tree: HostTree, add: Any = (), remove: Any = ()) -> PersistencePlan:
    """Add and remove kernel parameters in this host's boot-loader files. Writes nothing."""
    parameters = {}
    for name, value in (("add", add), ("remove", remove)):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value) or len(value) > 32:
            raise InvalidRequest(f"{name} must be a list of kernel parameters (text), at most 32.")
        parameters[name] = validate_parameters(value, name)
    if not parameters["add"] and not parameters["remove"]:
        raise InvalidRequest("Give at least one kernel parameter to add or remove.")
    edit = bootconfig.cmdline_edit(tree, parameters["add"], parameters["remove"])
    if not edit.possible:
        raise BootConfigUnsupported(f"The kernel command line cannot be edited here: {edit.reason}.")
    if not edit.edit_by_hand:
        raise BootConfigUnsupported(
            f"{edit.bootloader.label} rewrites its own files; run {' and '.join(edit.commands)} instead."
        )
    plan = PersistencePlan("set_kernel_cmdline", parameters["add"] + parameters["remove"], notes=list(edit.notes))
    plan.changes = [item for item in (change(e.path, e.before, e.after) for e in edit.edits) if item is not None]
    plan.commands = list(edit.commands) if plan.changes else []
    return plan


def plan_rebuild_initramfs(tree: HostTree) -> PersistencePlan:
    tool = bootconfig.detect_initramfs_tool(tree)
    if not tool.rebuild_command:
        raise BootConfigUnsupported("No initramfs generator (update-initramfs, dracut, mkinitcpio) was found.")
    return PersistencePlan("rebuild_initramfs", [], commands=[tool.rebuild_command])


# Applying and undoing ---------------------------------------------------------------------
def _apply(
    tree: HostTree,
    plan_for: Callable[..., PersistencePlan],
    parameters: dict[str, Any],
    fingerprint: Any,
    progress: Progress | None,
    run_command: RunCommand | None,
) -> OperationResult:
    result = OperationResult(plan_for.__name__.removeprefix("plan_"), parameters=parameters)
    recorder = Recorder(result, progress)
    with recorder.step("validate", None) as step:
        plan = plan_for(tree, **parameters)
        if fingerprint is not None and fingerprint != plan.fingerprint:
            raise FileChangedSinceApply(
                "The files changed since this plan was shown; nothing was written.",
                hint="Look at the new diff and apply that one.",
            )
        step.detail = f"{len(plan.changes)} files change; then {', '.join(plan.commands) or 'nothing to run'}"
    result.action = plan.action
    result.parameters = {**parameters, "fingerprint": plan.fingerprint}
    return apply_plan(tree, plan, result, recorder, runner_for(tree, run_command))


def apply_persist_binding(
    tree: HostTree,
    addresses: Any,
    *,
    native_drivers: Any = None,
    confirm: Any = None,
    fingerprint: Any = None,
    progress: Progress | None = None,
    run_command: RunCommand | None = None,
) -> OperationResult:
    parameters = {"addresses": addresses, "native_drivers": native_drivers, "confirm": confirm}
    return _apply(tree, plan_persist_binding, parameters, fingerprint, progress, run_command)


def apply_unpersist_binding(
    tree: HostTree,
    addresses: Any,
    *,
    fingerprint: Any = None,
    progress: Progress | None = None,
    run_command: RunCommand | None = None,
) -> OperationResult:
    return _apply(tree, plan_unpersist_binding, {"addresses": addresses}, fingerprint, progress, run_command)


def apply_kernel_cmdline(
    tree: HostTree,
    add: Any = (),
    remove: Any = (),
    *,
    fingerprint: Any = None,
    progress: Progress | None = None,
    run_command: RunCommand | None = None,
) -> OperationResult:
    parameters = {
        "add": list(add) if isinstance(add, tuple) else add,
        "remove": list(remove) if isinstance(remove, tuple) else remove,
    }
    return _apply(tree, plan_kernel_cmdline, parameters, fingerprint, progress, run_command)


def apply_rebuild_initramfs(
    tree: HostTree, *, progress: Progress | None = None, run_command: RunCommand | None = None
) -> OperationResult:
    return _apply(tree, plan_rebuild_initramfs, {}, None, progress, run_command)


def _undo_commands(tree: HostTree, action: str) -> list[str]:
    """What makes a restored file take effect; derived here, never taken from the record."""
    if action in ("persist_binding", "unpersist_binding"):
        rebuild = bootconfig.detect_initramfs_tool(tree).rebuild_command
        return [rebuild] if rebuild else []
    apply = bootconfig.detect_bootloader(tree).apply_command
    return [apply] if apply else []


def undo_change(
    tree: HostTree,
    record: Any,
    *,
    force: Any = False,
    progress: Progress | None = None,
    run_command: RunCommand | None = None,
) -> OperationResult:
    """Put the files an ``apply_*`` changed back from their backups, and run what makes that take effect.

    ``record`` is the ``undo`` of the apply's result. A file edited since is not
    overwritten unless ``force`` is true.
    """
    action = record.get("action") if isinstance(record, dict) else None
    if action not in UNDOABLE:
        raise InvalidRequest(
            f"This is not an undo record (action {action!r}).", hint="Use the record its apply job returned."
        )
    result = OperationResult(f"undo_{action}", parameters={"record": record, "force": force})
    recorder = Recorder(result, progress)
    with recorder.step("validate", "undo record"):
        files = parse_undo_record(record, action)
        if not isinstance(force, bool):
            raise InvalidRequest("force must be true or false.")
    result.targets = [item["path"] for item in files]
    commands = _undo_commands(tree, action)
    return undo_record(tree, files, commands, result, recorder, runner_for(tree, run_command), force=force)


UNDOABLE = ("persist_binding", "unpersist_binding", "set_kernel_cmdline")
undo_persist_binding = undo_change
undo_unpersist_binding = undo_change
undo_kernel_cmdline = undo_change
