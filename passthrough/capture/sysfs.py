"""What a capture records from sys/ (and /dev/vfio), and what it never reads there.

* PCI functions at their real paths under ``sys/devices`` (so bridges keep their place),
  their readable top-level attributes, ``config`` and the links the kernel gives them;
  drivers, IOMMU groups and IOMMU units so those links resolve;
* the entries the host-critical checks walk (net, block, drm, graphics, vtconsole): class
  entries whose real paths lead up to a PCI function, with only the named files and links
  (no MAC addresses or serials);
* efivar names, vfio and kvm modules with their parameters, and /dev/vfio;
* each NUMA node's ``cpulist`` (``sys/devices/system/node/nodeN``), so a VM can be pinned
  to the node of the device it gets.

Never read: BAR files (``resourceN``: reading one touches device memory), ROMs, VPD,
efivar contents other than systemd-boot's ``LoaderInfo`` (the loader's name and version,
which :mod:`passthrough.boot.loader` reads).
"""

from __future__ import annotations

import os
import re

from passthrough.boot.loader import LOADER_INFO
from passthrough.capture.recorder import ATTRIBUTE_LIMIT, Recorder
from passthrough.host import IOMMU_CLASS, IOMMU_GROUPS, PCI_DEVICES, PCI_DRIVERS
from passthrough.pci.address import is_address

CONFIG_LIMIT = 4096  # the whole extended config space; the kernel gives 64 bytes to non-root readers
LOADER_INFO_LIMIT = 256  # "systemd-boot 252.30" in UTF-16 is 40 bytes

# A function's links that say what it is bound to and where it sits.
FUNCTION_LINKS = ("driver", "iommu_group", "iommu", "physfn", "subsystem", "firmware_node")
BAR_FILE = re.compile(r"resource\d+(_wc)?$")
# vpd can block for seconds and holds serial numbers; amdgpu's pcie_bw sleeps a second per
# read, and its serial_number and unique_id identify the card without helping a bug report.
NEVER_READ = ("rom", "vpd", "pcie_bw", "serial_number", "unique_id")
# Write-only attributes whose presence is a fact (``reset`` says a function can be reset).
PRESENCE_ONLY = ("reset", "driver_override")
DRIVER_CONTROLS = ("bind", "unbind", "new_id", "remove_id")
MODULE_PREFIXES = ("vfio", "kvm")
EFIVARS = "sys/firmware/efi/efivars"
NUMA_NODES = "sys/devices/system/node"  # what passthrough.pci.scan.numa_nodes reads


class SysfsRecording(Recorder):
    # PCI functions and drivers -----------------------------------------------------------
    def pci_functions(self) -> None:
        for address in sorted(name for name in self.source.listdir(PCI_DEVICES) if is_address(name)):
            device = self.entry(f"{PCI_DEVICES}/{address}")
            if device is None or not os.path.isdir(self._src(device)):
                continue
            self.ensure_dir(device)
            self.recorded.add(device)
            for item in self.scandir(device):
                if item.is_symlink():
                    if item.name in FUNCTION_LINKS or item.name.startswith("virtfn"):
                        self.function_link(f"{device}/{item.name}")
                elif item.is_file(follow_symlinks=False):
                    self.attribute(f"{device}/{item.name}", item)
            self.summary.functions += 1
        for rel in ("sys/bus/pci/drivers_probe", "sys/bus/pci/rescan"):
            if self.source.exists(rel):
                self.placeholder(rel)

    def attribute(self, rel: str, item: os.DirEntry[str]) -> None:
        name = item.name
        if BAR_FILE.match(name) or name in NEVER_READ:
            return
        try:
            readable = bool(item.stat(follow_symlinks=False).st_mode & 0o444)
        except OSError:
            readable = False
        if not readable:
            if name in PRESENCE_ONLY:
                self.placeholder(rel)
            return
        limit = CONFIG_LIMIT if name == "config" else ATTRIBUTE_LIMIT
        if not self.copy_file(rel, limit) and name in PRESENCE_ONLY:
            self.placeholder(rel)

    def function_link(self, rel: str) -> None:
        target = self.copy_link(rel)
        name = os.path.basename(rel)
        if name == "iommu_group":
            self.iommu_group(target)
        elif name == "iommu":
            self.iommu_unit(target)
        elif name == "driver":
            self.pci_driver(target)
        self.ensure_target(target)

    def pci_drivers(self) -> None:
        for name in sorted(self.source.listdir(PCI_DRIVERS)):
            self.pci_driver(self.entry(f"{PCI_DRIVERS}/{name}"))

    def pci_driver(self, real: str | None) -> None:
        if real is None or not self.node(real):
            return
        for item in self.scandir(real):
            if item.name in DRIVER_CONTROLS and not item.is_symlink():
                self.placeholder(f"{real}/{item.name}")
            elif is_address(item.name) and item.is_symlink():
                self.ensure_target(self.copy_link(f"{real}/{item.name}"))
            elif item.name == "module" and item.is_symlink():
                # Which module provides the driver: binding at boot names it in its softdep line.
                self.ensure_target(self.copy_link(f"{real}/{item.name}"))

    # IOMMU groups and units --------------------------------------------------------------
    def iommu(self) -> None:
        for rel in (IOMMU_GROUPS, IOMMU_CLASS):
            if self.source.is_dir(rel):
                self.ensure_dir(self.resolve(rel) or rel)
        for group in sorted(self.source.listdir(IOMMU_GROUPS)):
            self.iommu_group(self.entry(f"{IOMMU_GROUPS}/{group}"))
        for unit in sorted(self.source.listdir(IOMMU_CLASS)):
            self.iommu_unit(self.entry(f"{IOMMU_CLASS}/{unit}"))

    def iommu_group(self, real: str | None) -> None:
        if real is None or not self.node(real, files=("type", "reserved_regions")):
            return
        self.summary.groups += 1
        for address in sorted(self.source.listdir(f"{real}/devices")):
            self.ensure_target(self.copy_link(f"{real}/devices/{address}"))

    def iommu_unit(self, real: str | None) -> None:
        """A dmarN (Intel, under devices/virtual/iommu) or ivhdN (AMD, under its PCI function)."""
        if real is None or not self.node(real):
            return
        for sub in ("", "/intel-iommu", "/amd-iommu"):
            self.readable_files(f"{real}{sub}")
        for name in sorted(self.source.listdir(f"{real}/devices")):
            self.ensure_target(self.copy_link(f"{real}/devices/{name}"))

    # Host-critical evidence ---------------------------------------------------------------
    def host_critical_evidence(self) -> None:
        for real in self.class_entries("sys/class/net"):
            self.net_interface(real)
        for directory in ("sys/block", "sys/class/block", "sys/dev/block"):
            for real in self.class_entries(directory):
                self.block_device(real)
        for real in self.class_entries("sys/class/drm", r"card\d+(-.*)?"):
            self.node(real, links=("device",))
        for real in self.class_entries("sys/class/graphics", r"fb\d+"):
            self.node(real, files=("name",), links=("device",))
        for real in self.class_entries("sys/class/vtconsole"):
            self.node(real, files=("name", "bind"))

    def class_entries(self, directory: str, pattern: str = ".*") -> list[str | None]:
        """Record the links of a class directory whose names match; return their real targets."""
        if not self.source.is_dir(directory):
            return []
        self.ensure_dir(self.resolve(directory) or directory)
        return [
            self.copy_link(f"{directory}/{item.name}")
            for item in self.scandir(directory)
            if item.is_symlink() and re.fullmatch(pattern, item.name)
        ]

    def net_interface(self, real: str | None) -> None:
        if not self.node(real, files=("operstate", "type", "bonding/slaves"), links=("device",)):
            return
        for item in self.scandir(real or ""):
            if item.name.startswith("lower_") and item.is_symlink():
                self.net_interface(self.copy_link(f"{real}/{item.name}"))
        for port in sorted(self.source.listdir(f"{real}/brif")):
            self.ensure_target(self.copy_link(f"{real}/brif/{port}"))

    def block_device(self, real: str | None) -> None:
        """A disk, partition or stacked device (dm, md), with its partitions and slaves."""
        if not self.node(real, files=("dev", "partition", "size", "ro", "removable", "dm/name"), links=("device",)):
            return
        for item in self.scandir(real or ""):
            if item.is_dir(follow_symlinks=False) and self.source.is_file(f"{real}/{item.name}/partition"):
                self.block_device(f"{real}/{item.name}")
        for slave in sorted(self.source.listdir(f"{real}/slaves")):
            self.block_device(self.copy_link(f"{real}/slaves/{slave}"))

    # Firmware, modules and /dev/vfio ------------------------------------------------------
    def firmware_and_modules(self) -> None:
        if self.source.is_dir("sys/firmware/efi"):
            self.ensure_dir("sys/firmware/efi")
            if self.source.is_dir(EFIVARS):
                self.ensure_dir(EFIVARS)
                for name in self.source.listdir(EFIVARS):
                    self.efivar(f"{EFIVARS}/{name}")
        for name in sorted(self.source.listdir("sys/module")):
            if name.startswith(MODULE_PREFIXES):
                self.ensure_dir(f"sys/module/{name}")
                self.readable_files(f"sys/module/{name}")  # initstate: loaded as a module, not built in
                self.readable_files(f"sys/module/{name}/parameters")
        if self.source.is_dir("dev"):
            self.ensure_dir("dev")  # says /dev was looked at, so a missing dev/vfio is a fact
        if self.source.is_dir("dev/vfio"):
            self.ensure_dir("dev/vfio")
            for name in self.source.listdir("dev/vfio"):
                self.placeholder(f"dev/vfio/{name}")

    def numa_nodes(self) -> None:
        for name in sorted(self.source.listdir(NUMA_NODES)):
            if name[:4] == "node" and name[4:].isdigit():
                self.node(self.resolve(f"{NUMA_NODES}/{name}"), files=("cpulist",))

    def efivar(self, rel: str) -> None:
        """An empty file by the variable's name; LoaderInfo keeps its content (the loader's name)."""
        if rel == LOADER_INFO:
            real = self.resolve(rel)  # a regular file inside the tree, never whatever a link names
            if real is not None and os.path.isfile(self._src(real)):
                self.copy_file(rel, LOADER_INFO_LIMIT, source_rel=real)
        self.placeholder(rel)  # unreadable LoaderInfo: its name still says systemd-boot set it
