"""The kernel attributes the operations read and store, and putting a function back.

Every store goes through ``HostTree.write`` (so a kernel double can answer it); every
state read comes from the tree, never from memory, so a result's ``state_after`` is what
the kernel says, not what the operation hoped.
"""

from __future__ import annotations

import errno as errnos
from typing import Any

from passthrough.errors import PassthroughError, SysfsWriteError
from passthrough.host import PCI_DEVICES, PCI_DRIVERS, HostTree
from passthrough.ops.errors import Interrupted, OperationFailed
from passthrough.ops.result import Recorder

VFIO = "vfio-pci"

ERRNO_WORDS = {
    errnos.EBUSY: "the device or driver is busy",
    errnos.ENODEV: "the driver does not take this device (or it is not bound to that driver)",
    errnos.ENOENT: "the attribute or driver does not exist",
    errnos.EINVAL: "the kernel does not accept this value here",
    errnos.ENOTTY: "the device does not support this",
    errnos.EEXIST: "it is already there",
    errnos.EPERM: "not permitted: the worker must run as root",
    errnos.EACCES: "not permitted: the worker must run as root",
    errnos.EIO: "an I/O error from the device",
    errnos.ERANGE: "the value is out of range",
    errnos.ENOMEM: "the kernel ran out of resources for it",
}


def driver(tree: HostTree, address: str) -> str | None:
    return tree.link_name(f"{PCI_DEVICES}/{address}/driver")


def driver_override(tree: HostTree, address: str) -> str | None:
    value = tree.read(f"{PCI_DEVICES}/{address}/driver_override")
    return None if value in (None, "", "(null)") else value


def iommu_group(tree: HostTree, address: str) -> int | None:
    name = tree.link_name(f"{PCI_DEVICES}/{address}/iommu_group")
    return int(name) if name is not None and name.isdigit() else None


def function_state(tree: HostTree, address: str) -> dict[str, Any]:
    return {
        "driver": driver(tree, address),
        "driver_override": driver_override(tree, address),
        "iommu_group": iommu_group(tree, address),
    }


def functions_state(tree: HostTree, addresses: list[str]) -> dict[str, dict[str, Any]]:
    return {address: function_state(tree, address) for address in addresses}


def vfio_node(tree: HostTree, group: int | None) -> bool:
    return group is not None and tree.exists(f"dev/vfio/{group}")


# Stores --------------------------------------------------------------------------------
def set_override(tree: HostTree, address: str, value: str | None) -> None:
    # "\n" clears it: the kernel cuts at the newline and an empty override means none.
    tree.write(f"{PCI_DEVICES}/{address}/driver_override", value or "\n")


def unbind(tree: HostTree, address: str, from_driver: str) -> None:
    tree.write(f"{PCI_DRIVERS}/{from_driver}/unbind", address)


def probe(tree: HostTree, address: str) -> None:
    tree.write("sys/bus/pci/drivers_probe", address)


def bind(tree: HostTree, address: str, to_driver: str) -> None:
    tree.write(f"{PCI_DRIVERS}/{to_driver}/bind", address)


# Failures in words ----------------------------------------------------------------------
def as_failure(error: BaseException, doing: str) -> PassthroughError:
    """Any exception met while acting, as an error a user can read."""
    if isinstance(error, SysfsWriteError):
        words = ERRNO_WORDS.get(error.errno or 0, "the kernel refused it")
        return OperationFailed(
            f"{doing} failed: {words}. {error.message}", path=error.path, errno=error.errno, hint=error.hint
        )
    if isinstance(error, PassthroughError):
        return error
    shown = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return Interrupted(
        f"{doing} was interrupted ({shown}).", hint="Run the operation again; it picks up where it stopped."
    )


# Putting a function back ----------------------------------------------------------------
def put_back(tree: HostTree, recorder: Recorder, address: str, before: dict[str, Any]) -> None:
    """Return one function to its recorded driver and driver_override, exactly."""
    now = driver(tree, address)
    wanted = before["driver"]
    if now != wanted:
        if now is not None:
            with recorder.step("rollback", address, f"unbind from {now}"):
                unbind(tree, address, now)
        if wanted is not None:
            # driver_override makes the bind match whatever made the driver match before
            # (its id table, a dynamic id, an override), so the same driver comes back.
            with recorder.step("rollback", address, f"bind back to {wanted}"):
                set_override(tree, address, wanted)
                bind(tree, address, wanted)
    if driver_override(tree, address) != before["driver_override"]:
        with recorder.step("rollback", address, f"driver_override back to {before['driver_override'] or '(none)'}"):
            set_override(tree, address, before["driver_override"])
