"""vfio-pci and vfio_iommu_type1 must be loaded before anything can bind to vfio-pci."""

from __future__ import annotations

from passthrough.host import PCI_DRIVERS, HostTree
from passthrough.ops.commands import RunCommand
from passthrough.ops.errors import VfioUnavailable
from passthrough.ops.result import Recorder
from passthrough.ops.sysfs import VFIO


def module_present(tree: HostTree, module: str) -> bool:
    """Loaded (``proc/modules``, ``sys/module``) or built into the kernel (``modules.builtin``)."""
    if tree.is_dir(f"sys/module/{module}"):
        return True
    if any(line.split()[:1] == [module] for line in (tree.read("proc/modules") or "").splitlines()):
        return True
    release = tree.read("proc/sys/kernel/osrelease")
    builtin = tree.read(f"lib/modules/{release}/modules.builtin", limit=4 * 1024 * 1024) if release else None
    return any(line.rsplit("/", 1)[-1] == f"{module}.ko" for line in (builtin or "").splitlines())


def vfio_pci_loaded(tree: HostTree) -> bool:
    return tree.is_dir(f"{PCI_DRIVERS}/{VFIO}")


def ensure_vfio(tree: HostTree, run: RunCommand, recorder: Recorder) -> list[str]:
    """Load vfio-pci (required) and vfio_iommu_type1 (warned about) when missing; returns warnings."""
    warnings = []
    if not vfio_pci_loaded(tree):
        with recorder.step("load_module", VFIO, "modprobe vfio-pci") as step:
            result = run(["modprobe", "vfio-pci"])
            step.detail = result.summary
            if not vfio_pci_loaded(tree):
                raise VfioUnavailable(
                    f"The vfio-pci driver is not loaded and could not be loaded: {result.summary}",
                    path=tree.path(f"{PCI_DRIVERS}/{VFIO}"),
                    hint="Install a kernel with CONFIG_VFIO_PCI (every Debian and Proxmox kernel has it) "
                    "and run `modprobe vfio-pci` as root to see the error.",
                )
    if not module_present(tree, "vfio_iommu_type1"):
        with recorder.step("load_module", "vfio_iommu_type1", "modprobe vfio_iommu_type1") as step:
            result = run(["modprobe", "vfio_iommu_type1"])
            step.detail = result.summary
        if not result.ok:
            warnings.append(
                f"vfio_iommu_type1 could not be loaded ({result.summary}); QEMU needs it (or iommufd) "
                "to start a VM with this device."
            )
    return warnings
