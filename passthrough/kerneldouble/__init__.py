"""A test double of the Linux kernel that acts on a host tree as the kernel acts on /sys.

``KernelDouble(root)`` is a :class:`~passthrough.host.HostTree` whose :meth:`write` does
what the kernel does with the store: ``driver_override`` decides the next probe,
``drivers/<drv>/unbind`` removes the ``driver`` link, ``drivers_probe`` binds by override
or by id, vfio-pci creates ``dev/vfio/<group>``, ``sriov_numvfs`` creates and removes VFs,
``reset`` follows ``reset_method`` (a bus reset only for a function alone on its bus, as in
pci_parent_bus_reset()), and faults can be injected (see :mod:`.faults`).
Commands go through :meth:`run_command` (``modprobe`` loads a module on the tree, ``qm``
edits its Proxmox VM configs as qemu-server would (see :mod:`.qm`); anything else is
recorded), so operations are tested end to end without root and without touching the
machine running the tests.

Its memory (native drivers, faults, dynamic ids) lives in ``<root>/.kerneldouble/``, so a
Celery worker in another process that builds ``KernelDouble(root)`` acts on the same
kernel as the test that set it up.

May import: ``passthrough.host`` (it is a HostTree), ``passthrough.errors``,
``passthrough.pci`` (addresses, the console reader), ``passthrough.ops`` (the sysfs
names the operations write, and ``RunCommand``) and ``passthrough.hosttrees`` (a VF is
written as the tree builder writes a function). Only tests, the demo and the benchmarks
import it; nothing in ``passthrough`` does.
"""

from __future__ import annotations

import errno as errnos
import fnmatch
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from passthrough.errors import SysfsWriteError
from passthrough.host import PCI_DEVICES, PCI_DRIVERS, HostTree
from passthrough.kerneldouble import qm
from passthrough.kerneldouble import state as stored
from passthrough.kerneldouble.console import PLATFORM_DRIVERS, Console
from passthrough.kerneldouble.faults import Fault
from passthrough.kerneldouble.modules import Modules
from passthrough.kerneldouble.pci import DRIVER_FILES, KernelRefused, PciCore, write_file
from passthrough.kerneldouble.sriov import Sriov
from passthrough.ops.commands import CommandResult
from passthrough.pci.address import is_address

__all__ = ["KernelDouble", "Fault", "RESET_METHODS"]

# Reset methods the kernel knows, highest priority first (drivers/pci/pci.c).
RESET_METHODS = ("device_specific", "acpi", "flr", "af_flr", "pm", "bus", "cxl_bus")
READ_ONLY_HINT = "not a writable attribute"
# Methods that reset the parent bridge's secondary bus (both end in pci_parent_bus_reset()).
BUS_RESETS = ("bus", "cxl_bus")
BRIDGE_CLASSES = ("0604", "0607", "0609")  # header types 1 and 2: they have a subordinate bus
ROOT_BUS = re.compile(r"^pci[0-9a-f]{4,8}:[0-9a-f]{2}$")  # sys/devices/pci0000:00


class KernelDouble(HostTree):
    """A host tree that answers writes as the kernel would."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        faults: Iterable[Fault] | None = None,
        native_drivers: dict[str, str | None] | None = None,
        vf_drivers: dict[str, str | None] | None = None,
    ) -> None:
        super().__init__(root)
        if self.is_live:
            raise ValueError("The kernel double acts on a host tree, never on the live /.")
        self.writes: list[tuple[str, str]] = []  # this process's writes, in order
        self.commands: list[list[str]] = []
        with self._kernel() as (core, state):
            if faults is not None:
                state.faults = []
                for fault in faults:
                    self._arm(state, fault)
            state.native.update(native_drivers or {})
            state.vf_drivers.update(vf_drivers or {})

    # State -----------------------------------------------------------------------------
    @contextmanager
    def _kernel(self) -> Iterator[tuple[PciCore, stored.DoubleState]]:
        with stored.locked(self.root):
            state = stored.load(self.root) if stored.exists(self.root) else self._first_look()
            try:
                yield PciCore(self, state), state
            finally:
                stored.save(self.root, state)

    def _first_look(self) -> stored.DoubleState:
        """Record what the kernel knew at boot: each function's driver and reset methods."""
        state = stored.DoubleState()
        for address in sorted(self.listdir(PCI_DEVICES)):
            state.native[address] = self.link_name(f"{PCI_DEVICES}/{address}/driver")
            methods = self.read(f"{PCI_DEVICES}/{address}/reset_method")
            if methods is not None:
                state.reset_methods[address] = methods.split()
        Console(PciCore(self, state)).complete()
        return state

    @property
    def state(self) -> stored.DoubleState:
        with stored.locked(self.root):
            return stored.load(self.root)

    @staticmethod
    def _arm(state: stored.DoubleState, fault: Fault) -> None:
        fault.armed_at = state.write_count
        state.faults.append(fault)

    def inject(self, *faults: Fault) -> None:
        with self._kernel() as (_, state):
            for fault in faults:
                self._arm(state, fault)

    def clear_faults(self) -> None:
        with self._kernel() as (_, state):
            state.faults = []

    def native_driver(self, address: str) -> str | None:
        return self.state.native.get(address)

    # Writes ----------------------------------------------------------------------------
    def write(self, relative: str, value: str) -> None:
        rel = os.path.normpath(relative.lstrip("/"))
        self.writes.append((rel, value))
        resolved = self._resolve(rel)
        self._hang(rel, resolved, value)
        with self._kernel() as (core, state):
            state.write_count += 1
            try:
                self._check_faults(state, rel, resolved, value)
                self._dispatch(core, rel, resolved, value)
            except KernelRefused as refused:
                raise SysfsWriteError(
                    f"The kernel refused {value!r} for {rel}: {os.strerror(refused.errno)} ({refused.why}).",
                    path=self.path(rel),
                    errno=refused.errno,
                ) from None

    def _resolve(self, rel: str) -> str:
        directory, name = os.path.split(rel)
        return f"{self.realpath(directory)}/{name}" if directory else rel

    def _hang(self, rel: str, resolved: str, value: str) -> None:
        with stored.locked(self.root):
            state = stored.load(self.root)
            hangs = [f for f in state.faults if f.kind == "hang" and not f.exhausted and f.matches_path(rel, resolved)]
            for fault in hangs:
                fault.fired += 1
            if hangs:
                stored.save(self.root, state)
        for fault in hangs:
            time.sleep(fault.seconds)  # outside the lock: the kernel hangs one device, not all

    @staticmethod
    def _check_faults(state: stored.DoubleState, rel: str, resolved: str, value: str) -> None:
        for fault in state.faults:
            if fault.exhausted:
                continue
            if fault.kind == "nth_write_fails" and state.write_count == fault.armed_at + (fault.nth or 1):
                fault.fired += 1
                raise KernelRefused(fault.errno or errnos.EIO, f"write {fault.nth} fails (injected fault)")
            if fault.kind == "write_fails" and fault.matches_path(rel, resolved) and fault.matches_value(value):
                fault.fired += 1
                raise KernelRefused(fault.errno or errnos.EBUSY, "injected fault")

    def _dispatch(self, core: PciCore, rel: str, resolved: str, value: str) -> None:
        parts = rel.split("/")
        if rel == "sys/bus/pci/drivers_probe":
            return self._drivers_probe(core, value)
        if len(parts) == 6 and parts[:4] == ["sys", "bus", "pci", "drivers"] and parts[5] in DRIVER_FILES:
            return self._driver_file(core, parts[4], parts[5], value)
        if len(parts) == 6 and "/".join(parts[:4]) == PLATFORM_DRIVERS and parts[5] in ("bind", "unbind"):
            console = Console(core)
            return console.bind(parts[4], value) if parts[5] == "bind" else console.unbind(parts[4], value)
        directory, name = os.path.split(resolved)
        if directory.startswith("sys/devices/virtual/vtconsole/") and name == "bind":
            return Console(core).bind_vtconsole(directory, value)
        address = os.path.basename(directory)
        if is_address(address) and core.exists(address) and core.device_dir(address) == directory:
            return self._device_attribute(core, address, name, value)
        if not self.exists(rel):
            raise KernelRefused(errnos.ENOENT, "no such attribute")
        raise KernelRefused(errnos.EISDIR if self.is_dir(rel) else errnos.EACCES, READ_ONLY_HINT)

    @staticmethod
    def _find(core: PciCore, value: str) -> str:
        address = value.strip()
        if not is_address(address) or not core.exists(address):
            raise KernelRefused(errnos.ENODEV, f"no PCI function {address!r}")
        return address

    def _drivers_probe(self, core: PciCore, value: str) -> None:
        core.probe(self._find(core, value))

    def _driver_file(self, core: PciCore, driver: str, name: str, value: str) -> None:
        if not core.loaded(driver):
            raise KernelRefused(errnos.ENOENT, f"driver {driver} is not loaded")
        if name in ("new_id", "remove_id"):
            return self._dynamic_id(core, driver, name, value)
        address = self._find(core, value)
        if name == "unbind":
            if core.driver_of(address) != driver:
                raise KernelRefused(errnos.ENODEV, f"{address} is not bound to {driver}")
            return core.detach(address)
        if core.driver_of(address) is not None:
            raise KernelRefused(errnos.EBUSY, f"{address} is already bound to {core.driver_of(address)}")
        if not core.matches(address, driver):
            raise KernelRefused(errnos.ENODEV, f"{driver} does not match {address}")
        core.attach(address, driver)

    @staticmethod
    def _dynamic_id(core: PciCore, driver: str, name: str, value: str) -> None:
        fields = value.split()
        try:
            vendor, device = (int(field, 16) for field in fields[:2])
        except ValueError:
            raise KernelRefused(errnos.EINVAL, f"{value!r} is not 'vendor device' in hex") from None
        ids = f"{vendor:04x}:{device:04x}"
        table = core.state.dynamic_ids.setdefault(driver, [])
        if name == "remove_id":
            if ids not in table:
                raise KernelRefused(errnos.ENODEV, f"{ids} is not a dynamic id of {driver}")
            table.remove(ids)
            return
        if ids in table:
            raise KernelRefused(errnos.EEXIST, f"{ids} is already a dynamic id of {driver}")
        table.append(ids)
        core.attach_all_matching(driver)

    def _device_attribute(self, core: PciCore, address: str, name: str, value: str) -> None:
        directory = core.device_dir(address)
        if not self.exists(f"{directory}/{name}"):
            raise KernelRefused(errnos.ENOENT, "no such attribute")
        if name == "driver_override":
            if len(value) >= 4096:
                raise KernelRefused(errnos.EINVAL, "longer than a page")
            override = value.split("\n", 1)[0]
            write_file(self, f"{directory}/driver_override", f"{override or '(null)'}\n")
        elif name == "reset":
            self._reset(core, address, value)
        elif name == "reset_method":
            self._reset_method(core, address, value)
        elif name == "sriov_numvfs":
            Sriov(core).set_numvfs(address, value)
        elif name == "sriov_drivers_autoprobe":
            flag = value.strip().lower()
            if flag not in ("0", "1", "y", "n", "yes", "no", "on", "off"):
                raise KernelRefused(errnos.EINVAL, f"{value!r} is not a boolean")
            write_file(self, f"{directory}/{name}", "1\n" if flag in ("1", "y", "yes", "on") else "0\n")
        elif name in ("remove", "rescan"):
            raise KernelRefused(errnos.EOPNOTSUPP, f"the kernel double does not model {name}")
        else:
            raise KernelRefused(errnos.EACCES, READ_ONLY_HINT)

    def _reset(self, core: PciCore, address: str, value: str) -> None:
        try:
            asked = int(value.strip(), 0)
        except ValueError:
            asked = 0
        if asked != 1:
            raise KernelRefused(errnos.EINVAL, "reset takes 1")
        listed = self.read(f"{PCI_DEVICES}/{address}/reset_method")
        methods = listed.split() if listed is not None else core.state.reset_methods.get(address, ["flr"])
        for method in methods:
            if method in BUS_RESETS and self._bus_reset_blocked(core, address):
                continue  # pci_parent_bus_reset() answers ENOTTY; the kernel tries the next method
            fault = core.fault("reset_fails", address=address, method=method)
            if fault is None:
                core.state.resets.append({"address": address, "method": method})
                return
            if fault.errno not in (None, errnos.ENOTTY):
                raise KernelRefused(fault.errno, f"{method} reset failed")
            # ENOTTY: this method cannot reset the device now; the kernel tries the next one.
        raise KernelRefused(errnos.ENOTTY, "no reset method could reset the device")

    def _bus_reset_blocked(self, core: PciCore, address: str) -> bool:
        """Why pci_parent_bus_reset() would answer ENOTTY: the bus is not the function's alone.

        The kernel resets the secondary bus of the parent bridge only for a function that is
        not on a root bus, is not a bridge itself (has no subordinate bus) and is the only
        device on its bus. ``reset_method`` is decided when the function is added, when it
        may still have been alone, so ``bus`` can be listed and still be refused here.
        """
        parent = os.path.basename(os.path.dirname(core.device_dir(address)))
        if ROOT_BUS.match(parent):
            return True  # on a root bus: no bridge above it to reset
        if (self.read(f"{PCI_DEVICES}/{address}/class") or "")[2:6] in BRIDGE_CLASSES:
            return True  # a bridge has a subordinate bus
        bus = address.rsplit(":", 1)[0]  # domain:bus; every function on that bus shares it
        return any(other != address and other.rsplit(":", 1)[0] == bus for other in core.addresses())

    def _reset_method(self, core: PciCore, address: str, value: str) -> None:
        supported = core.state.reset_methods.get(address, [])
        text = value.strip()
        if text == "default":
            chosen = supported
        else:
            chosen = text.split()
            for method in chosen:
                if method not in RESET_METHODS or method not in supported:
                    raise KernelRefused(errnos.EINVAL, f"unsupported reset method {method!r}")
        write_file(self, f"{core.device_dir(address)}/reset_method", " ".join(chosen) + "\n")

    # Commands ----------------------------------------------------------------------------
    def run_command(self, argv: list[str]) -> CommandResult:
        """Answer a command as the host would: modprobe and qm act on the tree, the rest is recorded."""
        argv = [str(arg) for arg in argv]
        self.commands.append(argv)
        with self._kernel() as (core, state):
            state.commands.append(argv)
            for fault in state.faults:
                if fault.kind != "command_fails" or fault.exhausted or fault.command is None:
                    continue
                if fnmatch.fnmatchcase(" ".join(argv), fault.command):
                    fault.fired += 1
                    return CommandResult(argv, fault.returncode, "", f"{argv[0]}: failed (injected fault)")
            if argv and os.path.basename(argv[0]) == "modprobe":
                return self._modprobe(core, argv)
            if argv and os.path.basename(argv[0]) == "qm":
                return qm.answer(self, argv)  # qemu-server's qm on etc/pve (see kerneldouble.qm)
        return CommandResult(argv, 0, "", "")

    @staticmethod
    def _modprobe(core: PciCore, argv: list[str]) -> CommandResult:
        options = [arg for arg in argv[1:] if arg.startswith("-")]
        names = [arg for arg in argv[1:] if not arg.startswith("-")]
        modules = Modules(core)
        if "-r" in options or "--remove" in options:
            for name in names:
                refused = modules.unload(name)
                if refused:
                    return CommandResult(argv, 1, "", refused)
        else:
            for name in names[:1] if names[1:] and "-a" not in options else names:
                modules.load(name)  # without -a, later words are module parameters
        return CommandResult(argv, 0, "", "")


def vfio_group_nodes(tree: HostTree) -> list[str]:
    return sorted(name for name in tree.listdir("dev/vfio") if name != "vfio")


def bound_to(tree: HostTree, driver: str) -> list[str]:
    return sorted(entry for entry in tree.listdir(f"{PCI_DRIVERS}/{driver}") if is_address(entry))
