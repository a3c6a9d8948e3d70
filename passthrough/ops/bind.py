"""bind_vfio and restore_driver: a whole IOMMU group to vfio-pci, and back to the host.

vfio hands a VM a whole group, so both act on every endpoint of the group of the address
given (bridges keep their driver, a host bridge without one stays). Binding is the
kernel's own sequence: ``driver_override`` = vfio-pci, unbind from the current driver,
``drivers_probe``. Going back clears the override, unbinds from vfio-pci and probes again.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from passthrough.host import HostTree
from passthrough.ops import console
from passthrough.ops.commands import RunCommand, runner_for
from passthrough.ops.errors import VerificationFailed
from passthrough.ops.flow import carry_out
from passthrough.ops.interlock import BIND, check_action
from passthrough.ops.modules import ensure_vfio
from passthrough.ops.persist import RULES_FILE, persisted_bindings
from passthrough.ops.result import UNCHANGED, OperationResult, Progress, Recorder
from passthrough.ops.sysfs import VFIO, driver, functions_state, probe, put_back, set_override, unbind, vfio_node
from passthrough.ops.validate import (
    parse_address,
    parse_confirm,
    parse_flag,
    parse_previous_drivers,
    require_device,
    require_endpoints,
    require_group,
    require_group_not_open,
    require_sound_cards_closed,
)
from passthrough.pci.isolation import describe
from passthrough.pci.model import Inventory, IommuGroup
from passthrough.pci.scan import scan

_NOT_GIVEN = object()


def _group_state(
    tree: HostTree, group: int, addresses: list[str], holders: list[console.ConsoleHolder]
) -> dict[str, Any]:
    state: dict[str, Any] = {"functions": functions_state(tree, addresses), "vfio_group_node": vfio_node(tree, group)}
    if holders:
        state["console"] = console.console_state(tree, holders)
    return state


def _companion_warnings(inventory: Inventory, group: IommuGroup) -> list[str]:
    warnings = []
    for address in group.companions:
        function = inventory.device(address)
        if function is not None:
            warnings.append(
                f"{describe(function)} belongs to the same card but sits in IOMMU group {function.iommu_group}; "
                "bind that group too, or the card cannot work in the VM."
            )
    return warnings


def _console_warning(inventory: Inventory, held: dict[str, list[console.ConsoleHolder]]) -> str:
    """One warning naming each function the host's console holds, and what holds it."""
    named = []
    for address, found in held.items():
        function = inventory.device(address)
        what = f"the boot GPU {address}" if function is not None and function.boot_vga else address
        named.append(f"{what} ({', '.join(holder.name for holder in found)})")
    return (
        f"The host's console still holds {' and '.join(named)}; vfio-pci may fail to claim its memory "
        "and the VM may show nothing. Ask for the console to be released."
    )


def bind_vfio(
    tree: HostTree,
    address: Any,
    *,
    confirm: Any = None,
    release_console: Any = False,
    progress: Progress | None = None,
    run_command: RunCommand | None = None,
) -> OperationResult:
    """Bind every endpoint of ``address``'s IOMMU group to vfio-pci; roll back on any failure."""
    result = OperationResult("bind_vfio", parameters={"address": address, "release_console": release_console})
    recorder = Recorder(result, progress)
    with recorder.step("validate", address if isinstance(address, str) else None) as step:
        wanted = parse_address(address)
        release = parse_flag(release_console, "release_console")
        confirmation = parse_confirm(confirm)
        inventory = scan(tree)
        function = require_device(inventory, wanted)
        group = require_group(tree, inventory, function)
        endpoints = require_endpoints(tree, group)
        confirmed = check_action(inventory, BIND, endpoints, confirmation).confirmed
        require_sound_cards_closed(tree, endpoints)
        step.detail = f"IOMMU group {group.id}: {', '.join(group.endpoints)} go to vfio-pci" + (
            f"; host-critical {', '.join(confirmed)} confirmed" if confirmed else ""
        )
    result.parameters = {"address": wanted, "release_console": release, "confirmed": confirmed}
    result.targets = targets = list(group.endpoints)
    result.warnings += _companion_warnings(inventory, group)

    holders: list[console.ConsoleHolder] = []
    held: dict[str, list[console.ConsoleHolder]] = {}
    for target in targets:
        found, warnings = console.holders_of(tree, inventory.device(target))  # type: ignore[arg-type]
        if found:
            held[target] = found
        holders += [holder for holder in found if holder not in holders]
        result.warnings += warnings
    with recorder.step("snapshot", f"group {group.id}"):
        before = result.state_before = _group_state(tree, group.id, targets, holders)
    todo = [target for target in targets if before["functions"][target]["driver"] != VFIO]
    if not todo and before["vfio_group_node"]:
        result.outcome = UNCHANGED
        result.state_after = before
        return result
    to_release = holders if release else []
    if holders and not release:
        result.warnings.append(_console_warning(inventory, held))

    result.warnings += ensure_vfio(tree, runner_for(tree, run_command), recorder)
    released: list[console.ConsoleHolder] = []

    def act() -> None:
        console.release(tree, recorder, to_release, released)
        for target in todo:
            _bind_one(tree, recorder, target, before["functions"][target])
        _verify_bound(tree, recorder, group.id, targets)

    def undo() -> list:
        steps: list = [
            partial(put_back, tree, recorder, target, before["functions"][target]) for target in reversed(targets)
        ]
        return steps + [partial(console.give_back, tree, recorder, released)]

    return carry_out(
        result,
        act=act,
        undo=undo,
        read_state=partial(_group_state, tree, group.id, targets, holders),
        doing=f"Binding IOMMU group {group.id} to vfio-pci",
    )


def _bind_one(tree: HostTree, recorder: Recorder, address: str, before: dict[str, Any]) -> None:
    if before["driver_override"] != VFIO:
        with recorder.step("override", address, "driver_override=vfio-pci"):
            set_override(tree, address, VFIO)
    current = driver(tree, address)
    if current is not None and current != VFIO:
        with recorder.step("unbind", address, f"unbind from {current}"):
            unbind(tree, address, current)
    if driver(tree, address) != VFIO:
        with recorder.step("bind", address, "drivers_probe") as step:
            probe(tree, address)
            got = driver(tree, address)
            if got != VFIO:
                raise VerificationFailed(
                    f"{address} did not bind to vfio-pci: after drivers_probe it has "
                    f"{'driver ' + got if got else 'no driver'}.",
                    path=tree.path(f"sys/bus/pci/devices/{address}/driver"),
                    hint="The kernel log says why (dmesg | grep -i vfio).",
                )
            step.detail = "drivers_probe: now on vfio-pci"


def _verify_bound(tree: HostTree, recorder: Recorder, group: int, targets: list[str]) -> None:
    with recorder.step("verify", f"group {group}") as step:
        for target in targets:
            got = driver(tree, target)
            if got != VFIO:
                raise VerificationFailed(
                    f"{target} is on {got or 'no driver'}, not vfio-pci.",
                    path=tree.path(f"sys/bus/pci/devices/{target}/driver"),
                )
        if not vfio_node(tree, group):
            raise VerificationFailed(
                f"Every function is on vfio-pci but /dev/vfio/{group} does not exist, so no VM can open the group.",
                path=tree.path(f"dev/vfio/{group}"),
                hint="Check that the IOMMU is really on (dmesg | grep -i -e DMAR -e AMD-Vi).",
            )
        step.detail = f"{', '.join(targets)} on vfio-pci; /dev/vfio/{group} exists"


def restore_driver(
    tree: HostTree,
    address: Any,
    *,
    previous_drivers: Any = None,
    released_console: Any = None,
    progress: Progress | None = None,
) -> OperationResult:
    """Give the group's functions on vfio-pci back to the host, and the console the bind took.

    ``previous_drivers`` ({address: driver or None}, as recorded before the bind) says
    where each one must end; without it, whatever the kernel probes is reported.
    ``released_console`` ({vtconN: None, framebuffer device: its driver}, what the bind
    released, see :func:`console.released_by`) is bound again and verified.
    """
    result = OperationResult(
        "restore_driver",
        parameters={"address": address, "previous_drivers": previous_drivers, "released_console": released_console},
    )
    recorder = Recorder(result, progress)
    with recorder.step("validate", address if isinstance(address, str) else None) as step:
        wanted = parse_address(address)
        inventory = scan(tree)
        function = require_device(inventory, wanted)
        group = require_group(tree, inventory, function)
        expected = parse_previous_drivers(previous_drivers, group.devices) or {}
        consoles = console.parse_released(released_console)
        require_group_not_open(tree, group.id, action="giving it back to the host")
        targets = [
            member.address
            for member in (inventory.device(endpoint) for endpoint in group.endpoints)
            if member is not None and VFIO in (member.driver, member.driver_override)
        ]
        consoles_todo, console_notes = console.still_released(tree, consoles)
        step.detail = f"IOMMU group {group.id}: " + (
            f"{', '.join(targets)} go back to the host" if targets else "nothing is on vfio-pci"
        )
        if consoles_todo:
            step.detail += f"; then the console ({', '.join(holder.name for holder in consoles_todo)})"
    result.parameters = {
        "address": wanted,
        "previous_drivers": expected,
        "released_console": {holder.name: holder.driver for holder in consoles} or None,
    }
    result.targets = targets
    result.warnings += console_notes
    read_state = partial(_restore_state, tree, group.id, list(group.endpoints), consoles_todo)
    with recorder.step("snapshot", f"group {group.id}"):
        before = result.state_before = read_state()
    if not targets and not consoles_todo:
        result.outcome = UNCHANGED
        result.state_after = before
        result.warnings += _bound_at_boot_warnings(before["bound_at_boot"])
        return result
    given: list[console.ConsoleHolder] = []

    def act() -> None:
        for target in targets:
            _restore_one(tree, recorder, target, before["functions"][target], expected.get(target, _NOT_GIVEN))
        if targets:
            _verify_restored(tree, recorder, group.id, targets, expected, result)
        if consoles_todo:
            console.give_back(tree, recorder, consoles_todo, given)
            console.verify_given_back(tree, recorder, consoles_todo)

    def undo() -> list:
        steps: list = [partial(console.release, tree, recorder, given, [])]
        return steps + [
            partial(put_back, tree, recorder, target, before["functions"][target]) for target in reversed(targets)
        ]

    carry_out(result, act=act, undo=undo, read_state=read_state, doing=f"Returning IOMMU group {group.id} to the host")
    if result.ok:
        result.warnings += _bound_at_boot_warnings(result.state_after["bound_at_boot"])
    return result


def _restore_state(
    tree: HostTree, group: int, addresses: list[str], consoles: list[console.ConsoleHolder]
) -> dict[str, Any]:
    """The group's state, and which of its functions the files bind to vfio-pci at the next boot."""
    bound = persisted_bindings(tree)
    return {
        **_group_state(tree, group, addresses, consoles),
        "bound_at_boot": [address for address in addresses if address in bound],
    }


def _bound_at_boot_warnings(addresses: list[str]) -> list[str]:
    if not addresses:
        return []
    one = len(addresses) == 1
    return [
        f"{', '.join(addresses)} {'is' if one else 'are'} still bound to vfio-pci at every boot "
        f"(/{RULES_FILE}): the next reboot takes {'it' if one else 'them'} from the host again. "
        f"Stop binding {'it' if one else 'them'} at boot to keep {'it' if one else 'them'} on the host."
    ]


def _restore_one(tree: HostTree, recorder: Recorder, address: str, before: dict[str, Any], expected: Any) -> None:
    if before["driver_override"] is not None:
        with recorder.step("override", address, "clear driver_override"):
            set_override(tree, address, None)
    if driver(tree, address) == VFIO:
        with recorder.step("unbind", address, "unbind from vfio-pci"):
            unbind(tree, address, VFIO)
    if expected is None:
        recorder.note("bind", address, "left without a driver, as it was before the bind")
        return
    with recorder.step("bind", address, "drivers_probe") as step:
        probe(tree, address)
        got = driver(tree, address)
        if expected is not _NOT_GIVEN and got != expected and got is None:
            # Its driver matched by a dynamic id or an override that is gone: bind it by name.
            set_override(tree, address, expected)
            tree.write(f"sys/bus/pci/drivers/{expected}/bind", address)
            set_override(tree, address, None)
            got = driver(tree, address)
        step.detail = f"drivers_probe: now on {got}" if got else "drivers_probe: no driver took it"


def _verify_restored(
    tree: HostTree,
    recorder: Recorder,
    group: int,
    targets: list[str],
    expected: dict[str, str | None],
    result: OperationResult,
) -> None:
    with recorder.step("verify", f"group {group}") as step:
        landed = []
        for target in targets:
            got = driver(tree, target)
            if target in expected and got != expected[target]:
                raise VerificationFailed(
                    f"{target} is on {got or 'no driver'}, not on {expected[target] or 'no driver'} as before the bind.",
                    path=tree.path(f"sys/bus/pci/devices/{target}/driver"),
                    hint=f"Load its driver (modprobe {expected[target]}) and try again." if expected[target] else None,
                )
            if got == VFIO:
                raise VerificationFailed(
                    f"{target} is still on vfio-pci.", path=tree.path(f"sys/bus/pci/devices/{target}/driver")
                )
            if target not in expected and got is None:
                result.warnings.append(f"No driver took {target}; load its driver to use it on the host.")
            landed.append(f"{target} on {got or 'no driver'}")
        step.detail = "; ".join(landed)
