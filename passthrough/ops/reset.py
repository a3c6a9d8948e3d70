"""reset: a function-level reset through ``reset``, following or choosing ``reset_method``.

Every reset is first put to the interlock (:mod:`passthrough.ops.interlock`): the chipset
and bridges are never reset from here, and a host-critical function needs the typed
confirmation. A reset touches only its target: the kernel performs a bus reset only for a
device alone on its bus.

The kernel tries the listed methods in order and moves on only when one answers ENOTTY
("cannot do it"); any other error stops it. A method the device lists can still be
refused when the reset is attempted (a bus reset needs the device alone behind its
bridge), so refusals are reported in words, not as a bare errno. When the reset can only
be a bus reset and other functions share the bus (a GPU and its audio function, two ports
of a NIC), the kernel's refusal is known in advance: it is refused before anything is
written, naming what shares the bus.

AMD Polaris, Vega and Navi 1x GPUs do not come back from a bus reset (the "AMD reset
bug": the GPU is left unusable until the host reboots); the out-of-tree vendor-reset
module adds a ``device_specific`` method that resets them properly.
"""

from __future__ import annotations

import errno as errnos
from functools import partial
from typing import Any

from passthrough.errors import SysfsWriteError
from passthrough.host import PCI_DEVICES, HostTree
from passthrough.ops.errors import DeviceInUse, ResetRefused, ResetUnavailable, UnknownResetMethod
from passthrough.ops.flow import carry_out
from passthrough.ops.interlock import BUS_RESETS, RESET, Permission, check_action, judge, never_reason, short
from passthrough.ops.result import FAILED, ROLLED_BACK, OperationResult, Progress, Recorder
from passthrough.ops.sysfs import VFIO, function_state
from passthrough.ops.validate import (
    parse_address,
    parse_confirm,
    parse_reset_method,
    require_device,
    require_group_not_open,
)
from passthrough.pci.isolation import describe
from passthrough.pci.model import Inventory, PciFunction
from passthrough.pci.scan import scan

# Device ids vendor-reset handles: the GPUs with the AMD reset bug (hardware ids, by family).
AMD_RESET_BUG = {
    "Polaris 10": "67c0 67c1 67c2 67c4 67c7 67c8 67c9 67ca 67cc 67cf 67d0 67df 6fdf",
    "Polaris 11": "67e0 67e1 67e3 67e7 67e8 67e9 67eb 67ef 67ff",
    "Polaris 12": "6980 6981 6985 6986 6987 6995 6997 699f",
    "Vega 10": "6860 6861 6862 6863 6864 6867 6868 6869 686a 686b 686c 686d 686e 686f 687f",
    "Vega 20": "66a0 66a1 66a2 66a3 66a4 66a7 66af",
    "Navi 10": "1681 7310 7312 7318 7319 731a 731b 731e 731f",
    "Navi 12": "7360 7362",
    "Navi 14": "7340 7341 7347 734f",
    "Arcturus": "738c",
}
_FAMILY_OF = {device: family for family, devices in AMD_RESET_BUG.items() for device in devices.split()}


def amd_reset_bug_family(function: PciFunction) -> str | None:
    """The GPU family when ``function`` is an AMD GPU known for the reset bug."""
    if function.vendor_id != "1002" or not (function.class_code or "").startswith("03"):
        return None
    return _FAMILY_OF.get(function.device_id or "")


def reset_warnings(function: PciFunction, methods: list[str] | None, chosen: str | None) -> list[str]:
    family = amd_reset_bug_family(function)
    if family is None:
        return []
    if methods and "device_specific" in methods:
        if chosen not in (None, "device_specific"):
            return [
                f"{describe(function)} is an AMD {family} GPU and vendor-reset offers device_specific for it; "
                f"{chosen} may leave it unusable until the host reboots. Prefer device_specific."
            ]
        return [f"vendor-reset provides device_specific for this AMD {family} GPU; the kernel uses it first."]
    return [
        f"{describe(function)} is an AMD {family} GPU with the AMD reset bug: a bus reset may leave it unusable "
        "until the host reboots. The vendor-reset module (github.com/gnif/vendor-reset) provides a "
        "device_specific reset that works for it."
    ]


def refusal_in_words(error: SysfsWriteError, method: str | None, listed: list[str] | None) -> ResetRefused:
    if error.errno == errnos.ENOTTY:
        what = f"the {method} reset" if method else f"any of its reset methods ({' '.join(listed or [])})"
        message = f"The device does not support this reset: the kernel could not perform {what} (ENOTTY)."
        hint = "Choose another method the device lists, or reset the slot by powering the host off."
        if method in BUS_RESETS or (method is None and any(name in BUS_RESETS for name in listed or [])):
            hint = "A bus reset needs the device alone on the bus behind its bridge. " + hint
    elif error.errno == errnos.EINVAL:
        message = (
            f"The kernel does not accept method {method or '(its default order)'} for this device — "
            "a listed method can still be refused when it is tried (EINVAL)."
        )
        hint = "A bus reset needs the device alone behind its bridge; try flr or pm, or another slot."
    else:
        message = f"The reset failed: {error.message}"
        hint = "The kernel log says more (dmesg | tail)."
    return ResetRefused(message, path=error.path, errno=error.errno, hint=hint)


def bus_neighbours(inventory: Inventory, function: PciFunction) -> list[PciFunction]:
    """The other functions on ``function``'s bus (same domain and bus number), VFs included."""
    here = function.pci_address
    return [
        other
        for other in inventory.devices
        if other.address != function.address
        and (other.pci_address.domain, other.pci_address.bus) == (here.domain, here.bus)
    ]


def bus_reset_obstacle(inventory: Inventory, function: PciFunction) -> str | None:
    """Why the kernel would answer a bus reset of ``function`` with ENOTTY, or None.

    pci_parent_bus_reset() resets the parent bridge's secondary bus only for a function on
    a bus below a bridge that is not a bridge itself and is the only device on that bus.
    ``reset_method`` is worked out when the function appears, when it may still have been
    alone, so ``bus`` can be listed and still be refused.
    """
    if function.sysfs_path is not None and function.parent is None:
        return f"{describe(function)} sits on a root bus, with no bridge above it whose bus could be reset"
    others = bus_neighbours(inventory, function)
    if others:
        listing = ", ".join(describe(other) for other in others)
        share = "shares" if len(others) == 1 else "share"
        return f"{listing} {share} bus {function.pci_address.bus:02x} with {short(function.address)}"
    return None


def refuse_a_bus_reset_the_kernel_refuses(
    tree: HostTree, inventory: Inventory, function: PciFunction, chosen: str | None
) -> None:
    """:class:`ResetUnavailable` when the reset can only be a bus reset and the kernel will refuse it."""
    listed = function.reset_methods
    if not listed:
        return  # no list (the kernel's choice is unknown) or nothing to choose from: said elsewhere
    if chosen is not None:
        if chosen not in BUS_RESETS or chosen not in listed:
            return
        tried = [chosen]
    else:
        tried = listed
    if not all(method in BUS_RESETS for method in tried):
        return  # the kernel has a method that resets the function alone to try first
    obstacle = bus_reset_obstacle(inventory, function)
    if obstacle is None:
        return
    method = " or ".join(tried)
    others = bus_neighbours(inventory, function)
    alone = [method for method in listed if method not in BUS_RESETS]
    options = []
    if alone:
        options.append(f"Choose {' or '.join(alone)}, which {short(function.address)} also lists; it resets it alone.")
    kept = [other for other in others if other.address in inventory.host_critical or never_reason(other)]
    if kept:
        options.append(
            f"{', '.join(describe(other) for other in kept)} must stay with the host, so this bus cannot be reset "
            "while the host runs."
        )
    elif others and function.parent is not None:
        options.append(
            f"To reset the bus, give {short(function.address)} to a VM together with "
            f"{', '.join(short(other.address) for other in others)} (all on vfio-pci): QEMU resets the whole bus "
            "through vfio-pci when one VM holds every function on it."
        )
    raise ResetUnavailable(
        f"The kernel will refuse a {method} reset of {describe(function)} (ENOTTY): {obstacle}. "
        "It performs a secondary bus reset only for a device alone on the bus behind its bridge, "
        f"even though reset_method lists {method} (the kernel fills that list in when the device appears, "
        "before it knows what else will share the bus).",
        path=tree.path(f"{PCI_DEVICES}/{function.address}/reset_method"),
        hint=" ".join(options) or "The kernel cannot reset it here; powering the host off resets it.",
    )


def _validate(tree: HostTree, address: Any, method: Any, confirm: Any) -> tuple[PciFunction, str | None, Permission]:
    wanted = parse_address(address)
    chosen = parse_reset_method(method)
    confirmation = parse_confirm(confirm)
    inventory = scan(tree)
    function = require_device(inventory, wanted)
    listed = function.reset_methods
    # The interlock speaks first, as on the device page: no other answer matters for the chipset.
    # A bus reset the kernel will refuse is refused next, before a confirmation is asked for a
    # reset that cannot happen.
    if judge(inventory, RESET, [wanted], method=chosen).allowed:
        refuse_a_bus_reset_the_kernel_refuses(tree, inventory, function, chosen)
    permission = check_action(inventory, RESET, [wanted], confirmation, method=chosen)
    if listed is None:
        if not function.has_reset:
            raise ResetUnavailable(f"{describe(function)} cannot be reset by the kernel: it has no reset attribute.")
        if chosen is not None:
            raise ResetUnavailable(
                "This kernel has no reset_method attribute (it appeared in Linux 5.15), so the method cannot be chosen.",
                hint="Leave the method empty to let the kernel pick.",
            )
    elif not listed:
        raise ResetUnavailable(
            f"{describe(function)} has every reset method disabled (reset_method is empty).",
            path=tree.path(f"{PCI_DEVICES}/{wanted}/reset_method"),
            hint="Write `default` to reset_method to get the kernel's methods back.",
        )
    elif chosen is not None and chosen not in listed:
        raise UnknownResetMethod(
            f"{describe(function)} does not offer the {chosen} reset; it offers {', '.join(listed)}.",
            path=tree.path(f"{PCI_DEVICES}/{wanted}/reset_method"),
        )
    if not tree.exists(f"{PCI_DEVICES}/{wanted}/reset"):
        raise ResetUnavailable(
            f"{describe(function)} has no reset attribute.", path=tree.path(f"{PCI_DEVICES}/{wanted}")
        )
    if function.driver not in (None, VFIO):
        raise DeviceInUse(
            f"{describe(function)} is driven by {function.driver}; resetting it under a live driver can crash "
            "the driver or the host.",
            path=tree.path(f"{PCI_DEVICES}/{wanted}/driver"),
            hint="Bind it to vfio-pci (or unbind it) first.",
        )
    if function.driver == VFIO:
        require_group_not_open(tree, function.iommu_group, action="resetting it")
    return function, chosen, permission


def reset(
    tree: HostTree, address: Any, *, method: Any = None, confirm: Any = None, progress: Progress | None = None
) -> OperationResult:
    """Reset one function, by ``method`` when given (restoring ``reset_method`` afterwards).

    ``confirm`` is the typed confirmation the interlock asks for when the function is
    host-critical.
    """
    result = OperationResult("reset", parameters={"address": address, "method": method})
    recorder = Recorder(result, progress)
    with recorder.step("validate", address if isinstance(address, str) else None) as step:
        function, chosen, permission = _validate(tree, address, method, confirm)
        step.detail = f"{describe(function)}: " + (f"{chosen} reset" if chosen else "the kernel picks the method")
        if permission.confirmed:
            step.detail += f"; host-critical {', '.join(permission.confirmed)} confirmed"
    address = function.address
    listed = function.reset_methods
    result.targets = [address]
    result.parameters = {"address": address, "method": chosen, "confirmed": permission.confirmed}
    result.warnings += reset_warnings(function, listed, chosen)
    read_state = partial(_state, tree, address)
    with recorder.step("snapshot", address):
        result.state_before = read_state()
    switch = chosen is not None and listed != [chosen]
    attribute = f"{PCI_DEVICES}/{address}/reset_method"

    def act() -> None:
        if switch:
            with recorder.step("set_method", address, f"reset_method={chosen}"):
                tree.write(attribute, chosen or "")
        with recorder.step("reset", address, "write 1 to reset") as step:
            try:
                tree.write(f"{PCI_DEVICES}/{address}/reset", "1")
            except SysfsWriteError as error:
                raise refusal_in_words(error, chosen, listed) from error
            step.detail = (
                f"the {chosen} reset" if chosen else f"the kernel's first working method of: {' '.join(listed or [])}"
            )
            step.detail += " reset the device"
        if switch:
            _restore_methods(tree, recorder, address, listed)

    carry_out(
        result,
        act=act,
        undo=lambda: [partial(_restore_methods, tree, recorder, address, listed)] if switch else [],
        read_state=read_state,
        doing=f"Resetting {address}",
    )
    if result.outcome == ROLLED_BACK and not switch:
        result.outcome = FAILED  # nothing was changed, so there was nothing to roll back
    return result


def _restore_methods(tree: HostTree, recorder: Recorder, address: str, listed: list[str] | None) -> None:
    if listed is None or (tree.read(f"{PCI_DEVICES}/{address}/reset_method") or "").split() == listed:
        return
    with recorder.step("restore_method", address, f"reset_method={' '.join(listed)}"):
        tree.write(f"{PCI_DEVICES}/{address}/reset_method", " ".join(listed))


def _state(tree: HostTree, address: str) -> dict[str, Any]:
    methods = tree.read(f"{PCI_DEVICES}/{address}/reset_method")
    return {
        "functions": {address: function_state(tree, address)},
        "reset_method": None if methods is None else methods.split(),
    }
