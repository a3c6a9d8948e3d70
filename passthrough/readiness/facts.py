"""What the checks share, read once per run: CPU, command line, kernel log, boot tooling.

``dmesg`` on a live host is a subprocess and the boot-loader detection reads a dozen
files, so every fact is read lazily and at most once for all checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from passthrough.boot.cmdline import KernelCmdline
from passthrough.boot.distro import Distro, detect_distro
from passthrough.boot.initramfs import InitramfsTool, detect_initramfs_tool
from passthrough.boot.loader import Bootloader, CmdlineEdit, cmdline_edit, detect_bootloader
from passthrough.host import IOMMU_CLASS, IOMMU_GROUPS, HostTree

_IOMMU_LOG = re.compile(r"DMAR|AMD-Vi|IVRS|IOMMU|iommu")
LOG_LINES_SHOWN = 12


@dataclass
class CpuInfo:
    vendor_id: str | None  # "GenuineIntel", "AuthenticAMD"; None on POWER and most ARM
    model: str | None  # "model name" on x86, "cpu" on POWER
    flags: set[str] = field(default_factory=set)
    has_x86_flags: bool = False  # a "flags" line exists: only x86 has one

    @property
    def vendor(self) -> str | None:
        """ "intel" or "amd" (Hygon's Zen derivative has AMD's SVM and AMD-Vi), else None."""
        return {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "amd"}.get(self.vendor_id or "")

    @property
    def is_virtual_machine(self) -> bool:
        return "hypervisor" in self.flags


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's vendor, model and flags (all processors of a host share them)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        key = key.strip()
        if colon and key not in values:
            values[key] = value.strip()
    return CpuInfo(
        vendor_id=values.get("vendor_id"),
        model=values.get("model name") or values.get("cpu"),
        flags=set(values.get("flags", "").split()),
        has_x86_flags="flags" in values,
    )


class HostFacts:
    def __init__(self, tree: HostTree) -> None:
        self.tree = tree

    @cached_property
    def cpuinfo_text(self) -> str | None:
        return self.tree.read("proc/cpuinfo", limit=8 << 20)

    @cached_property
    def cpu(self) -> CpuInfo | None:
        return None if self.cpuinfo_text is None else parse_cpuinfo(self.cpuinfo_text)

    @cached_property
    def cmdline_text(self) -> str | None:
        return self.tree.read("proc/cmdline")

    @cached_property
    def cmdline(self) -> KernelCmdline | None:
        return None if self.cmdline_text is None else KernelCmdline.parse(self.cmdline_text)

    @cached_property
    def kernel_log(self) -> list[str] | None:
        return self.tree.kernel_log()

    @cached_property
    def iommu_log(self) -> list[str]:
        return [line.strip() for line in self.kernel_log or [] if _IOMMU_LOG.search(line)]

    @cached_property
    def iommu_units(self) -> list[str]:
        return sorted(self.tree.listdir(IOMMU_CLASS))

    @cached_property
    def iommu_groups(self) -> list[str]:
        return sorted((name for name in self.tree.listdir(IOMMU_GROUPS) if name.isdigit()), key=int)

    @cached_property
    def vendor(self) -> str | None:
        """The platform vendor for IOMMU purposes: the IOMMU units', else the CPU's, else the log's.

        The units come first because they name the IOMMU driver that runs: a virtual machine's
        IOMMU is whatever its hypervisor emulates, and QEMU's intel-iommu serves an AMD CPU too
        (Proxmox's ``viommu=intel`` on an AMD host; seen on a real kernel: dmar0 beside AuthenticAMD).
        """
        if any(unit.startswith("dmar") for unit in self.iommu_units):
            return "intel"
        if any(unit.startswith("ivhd") for unit in self.iommu_units):
            return "amd"
        if self.cpu and self.cpu.vendor:
            return self.cpu.vendor
        if any("DMAR" in line for line in self.iommu_log):
            return "intel"
        if any("AMD-Vi" in line for line in self.iommu_log):
            return "amd"
        return None

    @cached_property
    def distro(self) -> Distro:
        return detect_distro(self.tree)

    @cached_property
    def bootloader(self) -> Bootloader:
        return detect_bootloader(self.tree)

    @cached_property
    def initramfs(self) -> InitramfsTool:
        return detect_initramfs_tool(self.tree, self.distro)

    @cached_property
    def has_boot_config(self) -> bool:
        """Whether the tree holds any of etc/, boot/, usr/: without them boot tooling is unknowable."""
        return any(self.tree.is_dir(name) for name in ("etc", "boot", "usr", "efi"))

    def cmdline_plan(self, add: list[str], remove: list[str]) -> CmdlineEdit:
        return cmdline_edit(self.tree, add, remove, self.bootloader)
