"""Kernel modules: vfio-pci and vfio_iommu_type1 must be loaded before anything can bind to
vfio-pci, and a softdep must name the module a native driver comes from, not the driver."""

from __future__ import annotations

import re

from passthrough.host import PCI_DRIVERS, HostTree
from passthrough.ops.commands import RunCommand
from passthrough.ops.errors import VfioUnavailable
from passthrough.ops.result import Recorder
from passthrough.ops.sysfs import VFIO


def module_loaded(tree: HostTree, module: str) -> bool:
    """Whether ``proc/modules`` lists ``module`` (a module loaded now, not one built in)."""
    listed = tree.read("proc/modules", limit=4 << 20) or ""
    return any(line.split()[:1] == [module] for line in listed.splitlines())


def module_present(tree: HostTree, module: str) -> bool:
    """Loaded (``proc/modules``, ``sys/module``) or built into the kernel (``modules.builtin``)."""
    if tree.is_dir(f"sys/module/{module}") or module_loaded(tree, module):
        return True
    release = tree.read("proc/sys/kernel/osrelease")
    builtin = tree.read(f"lib/modules/{release}/modules.builtin", limit=4 * 1024 * 1024) if release else None
    return any(line.rsplit("/", 1)[-1] == f"{module}.ko" for line in (builtin or "").splitlines())


# PCI driver -> the module that registers it, for trees without the driver's ``module`` link
# (captures record none). The first entries are the ones whose names differ: the RTX 20
# series' USB-C and UCSI functions are on xhci_hcd and nvidia-gpu, QEMU's VGA on bochs-drm.
KNOWN_DRIVER_MODULES = {
    "xhci_hcd": "xhci_pci",
    "nvidia-gpu": "i2c_nvidia_gpu",
    "bochs-drm": "bochs",
    "ehci-pci": "ehci_pci",
    "ohci-pci": "ohci_pci",
    "i801_smbus": "i2c_i801",
    "piix4_smbus": "i2c_piix4",
    "sdhci-pci": "sdhci_pci",
    "virtio-pci": "virtio_pci",
    "vfio-pci": "vfio_pci",
    **{
        name: name
        for name in (
            "nouveau", "nvidia", "amdgpu", "radeon", "i915", "xe", "ast", "mgag200", "qxl", "snd_hda_intel",
            "uhci_hcd", "nvme", "ahci", "mei_me", "igb", "igbvf", "ixgbe", "ixgbevf", "i40e", "iavf", "ice",
            "e1000e", "r8169", "iwlwifi", "mlx5_core",
        )
    },
}  # fmt: skip
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def module_of(tree: HostTree, driver: str) -> str | None:
    """The module PCI driver ``driver`` comes from (what modprobe and ``softdep`` take), or None when unknown.

    The kernel links ``sys/bus/pci/drivers/NAME/module`` to ``sys/module/MODNAME``; without
    that link, the known drivers above, then a module named like the driver that the host has.
    """
    linked = tree.link_name(f"{PCI_DRIVERS}/{driver}/module")
    if linked is not None:
        # The name goes into a modprobe.d file that root reads: only a plain module name will do.
        return linked if _MODULE_NAME.match(linked) else None
    if driver in KNOWN_DRIVER_MODULES:
        return KNOWN_DRIVER_MODULES[driver]
    same = driver.replace("-", "_")
    return same if _MODULE_NAME.match(same) and module_present(tree, same) else None


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
