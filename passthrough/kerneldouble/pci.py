"""Driver core of the double: which driver a function gets, and what binding leaves behind.

Rules followed (drivers/base/dd.c, drivers/pci/pci-driver.c, drivers/vfio/pci):
* a function with ``driver_override`` set matches that driver only, whatever its ids;
* without one, it matches its native driver (recorded when the double was created) and
  any driver whose dynamic ids (``new_id``) list its vendor:device;
* a driver must be loaded (its directory under ``sys/bus/pci/drivers``) to bind;
* vfio-pci refuses bridges and functions without an IOMMU group (EINVAL), and its first
  function of a group creates ``/dev/vfio/<group>``, removed when the last one leaves;
* a driver letting go of a function takes its class devices along (fb0, card0, the
  network interface); they come back when that driver binds again.
"""

from __future__ import annotations

import errno as errnos
import os
import shutil

from passthrough.host import IOMMU_GROUPS, PCI_DEVICES, PCI_DRIVERS, HostTree
from passthrough.kerneldouble.faults import Fault
from passthrough.kerneldouble.state import STASH_DIR, DoubleState
from passthrough.kerneldouble.tree import KernelRefused, link, unlink, write_file
from passthrough.kerneldouble.vtconsole import fbcon_takes_over

CLASS_DIRS = {"graphics": "graphics", "drm": "drm", "net": "net"}  # subdirectory -> sys/class/<name>
DRIVER_FILES = ("bind", "unbind", "new_id", "remove_id")


class PciCore:
    """Driver binding on one tree, inside one locked transaction over ``state``."""

    def __init__(self, tree: HostTree, state: DoubleState) -> None:
        self.tree = tree
        self.state = state

    # Facts read back from the tree ---------------------------------------------------
    def exists(self, address: str) -> bool:
        return self.tree.exists(f"{PCI_DEVICES}/{address}")

    def device_dir(self, address: str) -> str:
        return self.tree.realpath(f"{PCI_DEVICES}/{address}")

    def driver_of(self, address: str) -> str | None:
        return self.tree.link_name(f"{PCI_DEVICES}/{address}/driver")

    def override_of(self, address: str) -> str | None:
        value = self.tree.read(f"{PCI_DEVICES}/{address}/driver_override")
        return None if value in (None, "", "(null)") else value

    def ids_of(self, address: str) -> str:
        vendor = (self.tree.read(f"{PCI_DEVICES}/{address}/vendor") or "0x0000")[2:]
        device = (self.tree.read(f"{PCI_DEVICES}/{address}/device") or "0x0000")[2:]
        return f"{vendor}:{device}".lower()

    def group_of(self, address: str) -> str | None:
        return self.tree.link_name(f"{PCI_DEVICES}/{address}/iommu_group")

    def is_bridge(self, address: str) -> bool:
        return (self.tree.read(f"{PCI_DEVICES}/{address}/class") or "").startswith("0x0604")

    def loaded(self, driver: str) -> bool:
        return self.tree.is_dir(f"{PCI_DRIVERS}/{driver}")

    def addresses(self) -> list[str]:
        return sorted(self.tree.listdir(PCI_DEVICES))

    # Matching ------------------------------------------------------------------------
    def matches(self, address: str, driver: str) -> bool:
        override = self.override_of(address)
        if override is not None:
            return override == driver
        if self.state.native.get(address) == driver:
            return True
        return self.ids_of(address) in self.state.dynamic_ids.get(driver, [])

    def candidates(self, address: str) -> list[str]:
        override = self.override_of(address)
        if override is not None:
            return [override] if self.loaded(override) else []
        found = []
        native = self.state.native.get(address)
        if native and self.loaded(native):
            found.append(native)
        ids = self.ids_of(address)
        for driver, table in sorted(self.state.dynamic_ids.items()):
            if ids in table and driver not in found and self.loaded(driver):
                found.append(driver)
        return found

    def fault(self, kind: str, **wanted: str | None) -> Fault | None:
        for fault in self.state.faults:
            if fault.kind != kind or fault.exhausted:
                continue
            if all(getattr(fault, key) in (None, value) for key, value in wanted.items()):
                fault.fired += 1
                return fault
        return None

    # Binding -------------------------------------------------------------------------
    def attach(self, address: str, driver: str) -> None:
        """Run ``driver``'s probe on ``address``; KernelRefused when the probe fails."""
        fault = self.fault("probe_fails", address=address, driver=driver)
        if fault is not None:
            raise KernelRefused(
                fault.errno or errnos.ENODEV,
                f"{driver}: probe of {address} failed (injected fault)",
                surfaces=fault.errno is not None,
            )
        if driver == "vfio-pci":
            if self.is_bridge(address):
                raise KernelRefused(
                    errnos.EINVAL, f"vfio-pci: {address} is a bridge; vfio-pci takes endpoints only", surfaces=False
                )
            if self.group_of(address) is None:
                raise KernelRefused(errnos.EINVAL, f"vfio-pci: no IOMMU group for {address}", surfaces=False)
        device = self.device_dir(address)
        link(self.tree, f"{device}/driver", f"{PCI_DRIVERS}/{driver}")
        link(self.tree, f"{PCI_DRIVERS}/{driver}/{address}", device)
        self.restore_class_devices(device, driver)
        if driver == "vfio-pci":
            group = self.group_of(address)
            write_file(self.tree, f"dev/vfio/{group}", "")
            write_file(self.tree, "dev/vfio/vfio", "")

    def detach(self, address: str) -> None:
        driver = self.driver_of(address)
        if driver is None:
            return
        device = self.device_dir(address)
        unlink(self.tree, f"{device}/driver")
        unlink(self.tree, f"{PCI_DRIVERS}/{driver}/{address}")
        self.stash_class_devices(device, driver)
        if driver == "vfio-pci":
            group = self.group_of(address)
            members = self.tree.listdir(f"{IOMMU_GROUPS}/{group}/devices")
            if not any(self.driver_of(member) == "vfio-pci" for member in members):
                unlink(self.tree, f"dev/vfio/{group}")

    def probe(self, address: str) -> None:
        """What ``drivers_probe`` does: the first matching driver whose probe succeeds binds."""
        if self.driver_of(address) is not None:
            return
        for driver in self.candidates(address):
            try:
                self.attach(address, driver)
                return
            except KernelRefused as refused:
                if refused.surfaces:
                    raise
        # No driver took it: not an error for drivers_probe, exactly as the kernel answers.

    def attach_all_matching(self, driver: str) -> None:
        """A driver registered or given a new id binds every unbound function it matches."""
        for address in self.addresses():
            if self.driver_of(address) is None and self.matches(address, driver):
                try:
                    self.attach(address, driver)
                except KernelRefused:
                    continue

    def load_driver(self, driver: str) -> bool:
        """Create the driver's directory as module loading does; True when it was not loaded."""
        if self.loaded(driver):
            return False
        for name in DRIVER_FILES:
            write_file(self.tree, f"{PCI_DRIVERS}/{driver}/{name}", "")
        self.attach_all_matching(driver)
        return True

    # Class devices that leave with their driver --------------------------------------
    def stash_class_devices(self, device: str, driver: str) -> None:
        moved = []
        for subdirectory, class_name in CLASS_DIRS.items():
            source = f"{device}/{subdirectory}"
            if not self.tree.is_dir(source):
                continue
            names = self.tree.listdir(source)
            for name in names:
                unlink(self.tree, f"sys/class/{class_name}/{name}")
            keep = f"{STASH_DIR}/{os.urandom(6).hex()}"
            os.makedirs(os.path.dirname(self.tree.path(keep)), exist_ok=True)
            shutil.move(self.tree.path(source), self.tree.path(keep))
            moved.append({"subdirectory": subdirectory, "kept": keep, "names": names})
        if moved:
            self.state.stash.append({"device": device, "driver": driver, "moved": moved})

    def restore_class_devices(self, device: str, driver: str) -> None:
        for entry in list(self.state.stash):
            if entry["device"] != device or entry["driver"] != driver:
                continue
            for item in entry["moved"]:
                target = f"{device}/{item['subdirectory']}"
                if self.tree.exists(item["kept"]) and not self.tree.exists(target):
                    shutil.move(self.tree.path(item["kept"]), self.tree.path(target))
                    for name in item["names"]:
                        link(self.tree, f"sys/class/{CLASS_DIRS[item['subdirectory']]}/{name}", f"{target}/{name}")
                    if item["subdirectory"] == "graphics" and self.tree.read(f"{device}/boot_vga") == "1":
                        fbcon_takes_over(self.tree)
            self.state.stash.remove(entry)
