"""set_sriov_vfs: how many virtual functions a PF exposes.

The kernel refuses to change a non-zero count to another non-zero count (EBUSY), so a
change goes through 0 first. Going through 0 destroys every VF, with whatever driver or
VM held it; VFs whose group a VM has open are refused before anything is written. The PF
and its VFs are put to the interlock first: changing the count under the NIC the host is
reached through needs the typed confirmation.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from passthrough.host import PCI_DEVICES, HostTree
from passthrough.ops.errors import InvalidCount, NotSriovCapable, VerificationFailed
from passthrough.ops.flow import carry_out
from passthrough.ops.interlock import SET_SRIOV_VFS, check_action
from passthrough.ops.result import UNCHANGED, OperationResult, Progress, Recorder
from passthrough.ops.sysfs import VFIO, function_state, put_back
from passthrough.ops.validate import parse_address, parse_confirm, parse_count, require_device, require_group_not_open
from passthrough.pci.isolation import describe
from passthrough.pci.scan import scan


def virtfns(tree: HostTree, pf: str) -> list[str]:
    entries = [
        entry for entry in tree.listdir(f"{PCI_DEVICES}/{pf}") if entry.startswith("virtfn") and entry[6:].isdigit()
    ]
    entries.sort(key=lambda entry: int(entry[6:]))
    return [name for name in (tree.link_name(f"{PCI_DEVICES}/{pf}/{entry}") for entry in entries) if name]


def numvfs(tree: HostTree, pf: str) -> int:
    value = tree.read(f"{PCI_DEVICES}/{pf}/sriov_numvfs")
    return int(value) if value and value.isdigit() else 0


def _state(tree: HostTree, pf: str) -> dict[str, Any]:
    functions = [pf] + virtfns(tree, pf)
    return {
        "functions": {address: function_state(tree, address) for address in functions},
        "sriov_numvfs": numvfs(tree, pf),
    }


def set_sriov_vfs(
    tree: HostTree, address: Any, count: Any, *, confirm: Any = None, progress: Progress | None = None
) -> OperationResult:
    """Set the PF at ``address`` to ``count`` VFs; on failure, back to the count (and VF drivers) it had.

    ``confirm`` is the typed confirmation the interlock asks for when the PF or one of its
    VFs is host-critical (the NIC the host is reached through, say).
    """
    result = OperationResult("set_sriov_vfs", parameters={"address": address, "count": count})
    recorder = Recorder(result, progress)
    with recorder.step("validate", address if isinstance(address, str) else None) as step:
        pf = parse_address(address)
        wanted = parse_count(count)
        confirmation = parse_confirm(confirm)
        inventory = scan(tree)
        function = require_device(inventory, pf)
        if function.physfn is not None:
            raise NotSriovCapable(
                f"{describe(function)} is itself a virtual function of {function.physfn}.",
                hint=f"Set the count on its physical function, {function.physfn}.",
            )
        total = function.sriov_totalvfs
        if total is None:
            raise NotSriovCapable(
                f"{describe(function)} has no SR-IOV capability (the kernel shows no sriov_totalvfs).",
                path=tree.path(f"{PCI_DEVICES}/{pf}"),
            )
        if wanted > total:
            raise InvalidCount(
                f"{describe(function)} supports 0 to {total} VFs; {wanted} were asked.",
                path=tree.path(f"{PCI_DEVICES}/{pf}/sriov_totalvfs"),
            )
        confirmed = check_action(inventory, SET_SRIOV_VFS, [pf], confirmation).confirmed
        if function.driver is None:
            raise NotSriovCapable(
                f"SR-IOV is configured by the PF's driver, and no driver is bound to {describe(function)}.",
                path=tree.path(f"{PCI_DEVICES}/{pf}/driver"),
                hint="Bind its network (or storage) driver first.",
            )
        current = numvfs(tree, pf)
        if wanted != current:
            for vf in virtfns(tree, pf):
                vf_function = inventory.device(vf)
                require_group_not_open(
                    tree, vf_function.iommu_group if vf_function else None, action=f"removing VF {vf}"
                )
        step.detail = f"{describe(function)}: {current} → {wanted} of at most {total} VFs" + (
            f"; host-critical {', '.join(confirmed)} confirmed" if confirmed else ""
        )
    result.targets = [pf]
    result.parameters = {"address": pf, "count": wanted, "confirmed": confirmed}
    read_state = partial(_state, tree, pf)
    with recorder.step("snapshot", pf):
        before = result.state_before = read_state()
    if wanted == current:
        result.outcome = UNCHANGED
        result.state_after = before
        return result
    held = [vf for vf, state in before["functions"].items() if vf != pf and state["driver"] == VFIO]
    if held:
        result.warnings.append(
            f"{', '.join(held)} {'were' if len(held) > 1 else 'was'} on vfio-pci; VM configurations that name "
            "them need checking after the change."
        )
    attribute = f"{PCI_DEVICES}/{pf}/sriov_numvfs"

    def act() -> None:
        if current:
            with recorder.step("disable_vfs", pf, f"sriov_numvfs=0 (from {current})"):
                tree.write(attribute, "0")
        if wanted:
            with recorder.step("enable_vfs", pf, f"sriov_numvfs={wanted}"):
                tree.write(attribute, str(wanted))
        _verify(tree, recorder, pf, wanted)

    def undo() -> list:
        return [partial(_back_to, tree, recorder, pf, before)]

    return carry_out(result, act=act, undo=undo, read_state=read_state, doing=f"Setting {pf} to {wanted} VFs")


def _verify(tree: HostTree, recorder: Recorder, pf: str, wanted: int) -> None:
    with recorder.step("verify", pf) as step:
        got = numvfs(tree, pf)
        vfs = virtfns(tree, pf)
        if got != wanted or len(vfs) != wanted:
            raise VerificationFailed(
                f"{pf} shows {got} VFs ({len(vfs)} virtfn links) instead of {wanted}.",
                path=tree.path(f"{PCI_DEVICES}/{pf}/sriov_numvfs"),
                hint="The PF driver enabled fewer VFs than asked; its kernel log lines say why (dmesg | tail).",
            )
        grouped = tree.exists(f"{PCI_DEVICES}/{pf}/iommu_group")
        for vf in vfs:
            if tree.link_name(f"{PCI_DEVICES}/{vf}/physfn") != pf:
                raise VerificationFailed(f"VF {vf} has no physfn link to {pf}.", path=tree.path(f"{PCI_DEVICES}/{vf}"))
            if grouped and not tree.exists(f"{PCI_DEVICES}/{vf}/iommu_group"):
                raise VerificationFailed(f"VF {vf} has no IOMMU group.", path=tree.path(f"{PCI_DEVICES}/{vf}"))
        step.detail = f"{got} VFs: {', '.join(vfs)}" if vfs else "no VFs"


def _back_to(tree: HostTree, recorder: Recorder, pf: str, before: dict[str, Any]) -> None:
    previous = before["sriov_numvfs"]
    attribute = f"{PCI_DEVICES}/{pf}/sriov_numvfs"
    if numvfs(tree, pf) != previous:
        if numvfs(tree, pf):
            with recorder.step("rollback", pf, "sriov_numvfs=0"):
                tree.write(attribute, "0")
        if previous:
            with recorder.step("rollback", pf, f"sriov_numvfs={previous}"):
                tree.write(attribute, str(previous))
    # Re-created VFs come back with their default driver; put each back where it was.
    for vf, state in before["functions"].items():
        if vf != pf and tree.exists(f"{PCI_DEVICES}/{vf}"):
            put_back(tree, recorder, vf, state)
