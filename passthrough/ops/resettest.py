"""run_reset_test: try each reset method the kernel lists for a function on vfio-pci, and record which work.

For each method in ``reset_method``, in the kernel's order: that method alone is written to
``reset_method``, 1 to ``reset``, and the function is checked: it came back when its config
space answers with its own vendor id (the first two bytes of ``config``; all ones means the
device is gone from the bus) and, where the kernel shows ``power_state``, the function is in
D0 (or in D3hot because vfio-pci put the idle function to sleep, which the config read
undoes). Each method ends as *worked*, *failed* (the kernel's errno, in words), *did not
come back*, or *not tried* (with why). The original ``reset_method`` list is written back at
the end, and also when anything fails part way.

The refusals are :func:`passthrough.ops.reset.reset`'s: the interlock first, a function
that lists only bus resets the kernel will refuse, a function not on vfio-pci (resetting
under a live host driver can crash it or the host), a group a VM has open. A bus reset the
kernel will refuse (another function shares the bus) is not tried. On an AMD GPU with the
reset bug only ``device_specific`` (vendor-reset's) is tried: the others leave such a GPU
unusable until the host is powered off, which is what the test exists to find out safely.
"""

from __future__ import annotations

import errno as errnos
from functools import partial
from typing import Any

from passthrough.errors import SysfsWriteError
from passthrough.host import PCI_DEVICES, HostTree
from passthrough.ops.errors import DeviceInUse, ResetUnavailable, VerificationFailed
from passthrough.ops.flow import carry_out
from passthrough.ops.interlock import BUS_RESETS, RESET, check_action, judge
from passthrough.ops.modules import module_loaded
from passthrough.ops.reset import amd_reset_bug_family, bus_reset_obstacle, refuse_a_bus_reset_the_kernel_refuses
from passthrough.ops.result import OperationResult, Progress, Recorder
from passthrough.ops.sysfs import ERRNO_WORDS, VFIO, function_state
from passthrough.ops.validate import parse_address, parse_confirm, require_device, require_group_not_open
from passthrough.pci.isolation import describe
from passthrough.pci.model import PciFunction
from passthrough.pci.scan import scan

WORKED = "worked"
FAILED = "failed"
GONE = "did_not_come_back"
NOT_TRIED = "not_tried"


def vendor_reset_loaded(tree: HostTree) -> bool:
    """Whether vendor_reset (the module that resets AMD GPUs with the reset bug) is loaded."""
    return module_loaded(tree, "vendor_reset")


def answers(tree: HostTree, address: str, vendor: str | None) -> str | None:
    """Why the function is not back (None when it is): its config space and power state."""
    head = tree.read_bytes(f"{PCI_DEVICES}/{address}/config", limit=2)
    if head is None or len(head) < 2:
        return "its config space cannot be read"
    read = f"{head[1]:02x}{head[0]:02x}"
    if read == "ffff":
        return "its config space reads all ones (vendor ffff): the device does not answer"
    if vendor is not None and read != vendor:
        return f"its config space reads vendor {read}, not {vendor}"
    state = tree.read(f"{PCI_DEVICES}/{address}/power_state")
    if state is None or state == "D0":
        return None
    if state == "D3hot" and tree.read(f"{PCI_DEVICES}/{address}/power/runtime_status") == "suspended":
        return None  # vfio-pci suspends an idle function; it answered the config read above
    return f"it is in power state {state}, not D0"


def _errno_words(error: SysfsWriteError) -> str:
    name = errnos.errorcode.get(error.errno or 0, "an error")
    return f"{name}: {ERRNO_WORDS.get(error.errno or 0, 'the kernel refused it')}"


def _validate(tree: HostTree, address: Any, confirm: Any) -> tuple[PciFunction, list[str], list[str]]:
    wanted = parse_address(address)
    confirmation = parse_confirm(confirm)
    inventory = scan(tree)
    function = require_device(inventory, wanted)
    if judge(inventory, RESET, [wanted]).allowed:
        refuse_a_bus_reset_the_kernel_refuses(tree, inventory, function, None)
    confirmed = check_action(inventory, RESET, [wanted], confirmation).confirmed
    listed = function.reset_methods
    attribute = tree.path(f"{PCI_DEVICES}/{wanted}/reset_method")
    if listed is None:
        raise ResetUnavailable(
            f"{describe(function)} has no reset_method attribute (it appeared in Linux 5.15), so its methods cannot "
            "be tried one by one.",
            hint="The device page's Reset lets the kernel pick its method.",
        )
    if not listed:
        raise ResetUnavailable(
            f"{describe(function)} has every reset method disabled (reset_method is empty): there is nothing to test.",
            path=attribute,
            hint="Write `default` to reset_method to get the kernel's methods back.",
        )
    if not tree.exists(f"{PCI_DEVICES}/{wanted}/reset"):
        raise ResetUnavailable(
            f"{describe(function)} has no reset attribute.", path=tree.path(f"{PCI_DEVICES}/{wanted}")
        )
    if function.driver != VFIO:
        raise DeviceInUse(
            f"{describe(function)} is "
            + (f"driven by {function.driver}" if function.driver else "bound to no driver")
            + "; the reset test runs only on a function bound to vfio-pci (a reset under a live host driver can "
            "crash the driver or the host).",
            path=tree.path(f"{PCI_DEVICES}/{wanted}/driver"),
            hint="Pass its group through (bind it to vfio-pci) first.",
        )
    require_group_not_open(tree, function.iommu_group, action="testing its resets")
    gone = answers(tree, wanted, function.vendor_id)
    if gone:
        raise ResetUnavailable(
            f"{describe(function)} does not answer before any reset: {gone}.",
            path=tree.path(f"{PCI_DEVICES}/{wanted}/config"),
            hint="Power the host off and on to bring it back; then test again.",
        )
    return function, list(listed), confirmed


def _not_tried(tree: HostTree, function: PciFunction, method: str) -> str | None:
    """Why ``method`` is not tried on ``function``, or None."""
    family = amd_reset_bug_family(function)
    if family and method != "device_specific":
        return (
            f"not tried on an AMD {family} GPU: a {method} reset leaves it unusable until the host is powered off "
            "(the AMD reset bug); vendor-reset's device_specific is the reset that works for it"
        )
    if method in BUS_RESETS:
        obstacle = bus_reset_obstacle(scan(tree), function)
        if obstacle:
            return f"not tried: the kernel refuses it (ENOTTY) because {obstacle}"
    return None


def run_reset_test(
    tree: HostTree, address: Any, *, confirm: Any = None, progress: Progress | None = None
) -> OperationResult:
    """Try every method ``address`` lists; ``result.parameters["methods"]`` records how each went."""
    result = OperationResult("test_reset", parameters={"address": address})
    recorder = Recorder(result, progress)
    with recorder.step("validate", address if isinstance(address, str) else None) as step:
        function, listed, confirmed = _validate(tree, address, confirm)
        step.detail = f"{describe(function)}: tries {', '.join(listed)}" + (
            f"; host-critical {', '.join(confirmed)} confirmed" if confirmed else ""
        )
    address = function.address
    family = amd_reset_bug_family(function)
    tested: list[dict[str, Any]] = []
    result.targets = [address]
    result.parameters = {"address": address, "confirmed": confirmed, "listed": listed, "methods": tested}
    if family:
        loaded = vendor_reset_loaded(tree)
        result.parameters["amd_reset_bug"] = {"family": family, "vendor_reset_loaded": loaded}
        result.warnings.append(
            f"{describe(function)} is an AMD {family} GPU with the reset bug; vendor_reset "
            + ("is loaded." if loaded else "is not loaded: install vendor-reset before giving it to a VM.")
        )
    read_state = partial(_state, tree, address)
    with recorder.step("snapshot", address):
        result.state_before = read_state()
    attribute = f"{PCI_DEVICES}/{address}/reset_method"

    def record(method: str, outcome: str, detail: str, error: SysfsWriteError | None = None) -> None:
        tested.append(
            {
                "method": method,
                "outcome": outcome,
                "detail": detail,
                "errno": errnos.errorcode.get(error.errno or 0) if error is not None else None,
            }
        )
        recorder.note("tested", address, f"{method}: {outcome.replace('_', ' ')}: {detail}", ok=outcome == WORKED)

    def try_one(method: str) -> None:
        why_not = _not_tried(tree, function, method)
        if why_not:
            record(method, NOT_TRIED, why_not)
            return
        try:
            if (tree.read(attribute) or "").split() != [method]:
                with recorder.step("set_method", address, f"reset_method={method}"):
                    tree.write(attribute, method)
            with recorder.step("reset", address, f"{method}: write 1 to reset"):
                tree.write(f"{PCI_DEVICES}/{address}/reset", "1")
        except SysfsWriteError as error:
            record(method, FAILED, f"the kernel answered {_errno_words(error)}", error)
            return
        gone = answers(tree, address, function.vendor_id)
        if gone:
            record(method, GONE, f"the reset returned, but {gone}")
        else:
            record(method, WORKED, "the function came back: its config space answers")

    def act() -> None:
        for method in listed:
            lost = next((item["method"] for item in tested if item["outcome"] == GONE), None)
            if lost:  # a function gone from the bus is not reset again
                record(method, NOT_TRIED, f"not tried: the function did not come back after the {lost} reset")
            else:
                try_one(method)
        _restore(tree, recorder, address, listed)
        with recorder.step("verify", address) as step:
            gone = answers(tree, address, function.vendor_id)
            if gone:
                lost = next((item["method"] for item in tested if item["outcome"] == GONE), "last")
                raise VerificationFailed(
                    f"{describe(function)} did not come back after the {lost} reset: {gone}.",
                    path=tree.path(f"{PCI_DEVICES}/{address}/config"),
                    hint="Power the host off and on to bring it back; do not give it to a VM until then.",
                )
            worked = [item["method"] for item in tested if item["outcome"] == WORKED]
            step.detail = f"{', '.join(worked) or 'no method'} worked; reset_method is {' '.join(listed)} again"
        if not any(item["outcome"] == WORKED for item in tested):
            result.warnings.append(
                f"No reset method worked for {describe(function)}: a VM restart may find it as the guest left it, "
                "and only a host reboot clears that."
            )

    return carry_out(
        result,
        act=act,
        undo=lambda: [partial(_restore, tree, recorder, address, listed)],
        read_state=read_state,
        doing=f"Testing the resets of {address}",
    )


def _restore(tree: HostTree, recorder: Recorder, address: str, listed: list[str]) -> None:
    attribute = f"{PCI_DEVICES}/{address}/reset_method"
    if (tree.read(attribute) or "").split() != listed:
        with recorder.step("restore_method", address, f"reset_method={' '.join(listed)}"):
            tree.write(attribute, " ".join(listed))


def _state(tree: HostTree, address: str) -> dict[str, Any]:
    methods = tree.read(f"{PCI_DEVICES}/{address}/reset_method")
    return {
        "functions": {address: function_state(tree, address)},
        "reset_method": None if methods is None else methods.split(),
        "answers": answers(tree, address, None) is None,
    }
