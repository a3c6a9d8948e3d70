"""``modprobe`` on the double: loading a module registers its driver, as on the host.

``modprobe vfio-pci`` lists vfio_pci and its dependencies in ``proc/modules``, creates
``sys/module/<name>``, ``sys/bus/pci/drivers/vfio-pci`` (with its ``module`` link back to
``sys/module/vfio_pci``) and ``/dev/vfio/vfio``, and binds
every function whose driver_override already names vfio-pci. ``modprobe -r`` refuses a
module whose driver still holds a function.
"""

from __future__ import annotations

import shutil

from passthrough.host import PCI_DRIVERS
from passthrough.kerneldouble.pci import PciCore, link, write_file

# Module name -> the PCI driver it registers, where the two differ.
MODULE_DRIVERS = {
    "vfio_pci": "vfio-pci",
    "xhci_pci": "xhci_hcd",
    "virtio_pci": "virtio-pci",
    "i2c_nvidia_gpu": "nvidia-gpu",
    "bochs": "bochs-drm",
}
DEPENDENCIES = {"vfio_pci": ["vfio", "vfio_pci_core"], "vfio_pci_core": ["vfio"], "vfio_iommu_type1": ["vfio"]}


def module_name(name: str) -> str:
    return name.replace("-", "_")


class Modules:
    def __init__(self, core: PciCore) -> None:
        self.core = core
        self.tree = core.tree

    def listed(self) -> list[str]:
        return [line.split()[0] for line in (self.tree.read("proc/modules") or "").splitlines() if line.strip()]

    def driver_of_module(self, module: str) -> str | None:
        if module in MODULE_DRIVERS:
            return MODULE_DRIVERS[module]
        known = {driver for driver in self.core.state.native.values() if driver} | set(
            self.core.state.vf_drivers.values()
        )
        return next((driver for driver in sorted(known, key=str) if driver and module_name(driver) == module), None)

    def load(self, name: str) -> None:
        module = module_name(name)
        for dependency in DEPENDENCIES.get(module, []):
            self.load(dependency)
        if module not in self.listed():
            with open(self.tree.path("proc/modules"), "a") as handle:
                handle.write(f"{module} 16384 0 - Live 0x0000000000000000\n")
        write_file(self.tree, f"sys/module/{module}/initstate", "live\n")
        if module == "vfio":
            write_file(self.tree, "dev/vfio/vfio", "")
        driver = self.driver_of_module(module)
        if driver:
            self.core.load_driver(driver)
            link(self.tree, f"{PCI_DRIVERS}/{driver}/module", f"sys/module/{module}")
            link(self.tree, f"sys/module/{module}/drivers/pci:{driver}", f"{PCI_DRIVERS}/{driver}")

    def unload(self, name: str) -> str | None:
        """Remove a module; the reason it cannot be removed, or None."""
        module = module_name(name)
        driver = self.driver_of_module(module)
        if driver and self.tree.is_dir(f"{PCI_DRIVERS}/{driver}"):
            bound = [entry for entry in self.tree.listdir(f"{PCI_DRIVERS}/{driver}") if ":" in entry]
            if bound:
                return f"modprobe: FATAL: Module {module} is in use."
            shutil.rmtree(self.tree.path(f"{PCI_DRIVERS}/{driver}"))
        lines = (self.tree.read("proc/modules") or "").splitlines()
        kept = [line for line in lines if line.split() and line.split()[0] != module]
        write_file(self.tree, "proc/modules", "".join(f"{line}\n" for line in kept))
        if self.tree.is_dir(f"sys/module/{module}"):
            shutil.rmtree(self.tree.path(f"sys/module/{module}"))
        return None
