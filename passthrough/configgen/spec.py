"""What a VM gets (:class:`VmSpec`) and what a generator hands back (:class:`GeneratedConfig`).

A spec lists PCI functions by host address with the reason each one is there (the user
picked it, or it has to move with a picked one), plus the VM-wide choices every target
understands in its own words: firmware, machine type, primary GPU, ROM, memory, vCPUs,
hugepages and the options that hide the hypervisor from old NVIDIA drivers.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from passthrough.configgen.errors import ConfigError
from passthrough.configgen.safe import UNSAFE
from passthrough.pci.address import PciAddress
from passthrough.pci.model import Bar
from passthrough.topology.placement import cpulist_text, parse_cpulist

if TYPE_CHECKING:
    from passthrough.pci.model import Inventory, PciFunction

FIRMWARES = ("ovmf", "seabios")
MACHINES = ("q35", "i440fx")

# Debian's ovmf package (bookworm): the 4 MiB build, Secure Boot off. The VARS file is a
# template: each VM needs its own writable copy for its UEFI variables.
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# QEMU copies at most 12 bytes into the Hyper-V vendor leaf; libvirt's schema says the same.
_HV_VENDOR_ID = re.compile(r"^[A-Za-z0-9_-]{1,12}$")
# Proxmox's pve-configid format, which cluster mapping names use.
_PVE_CONFIGID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]+$")


@dataclass
class PassedDevice:
    """One PCI function given to the VM."""

    address: str  # full dddd:bb:ss.f
    added_because: str | None = None  # None: the user picked it
    rom_file: str | None = None  # absolute path on the host
    rombar: bool = True
    x_vga: bool = False  # the primary GPU's display function
    bars: list[Bar] = field(default_factory=list)  # memory BARs; empty: not known
    is_vf: bool = False  # an SR-IOV virtual function

    @property
    def picked(self) -> bool:
        return self.added_because is None

    @property
    def pci_address(self) -> PciAddress:
        return PciAddress.parse(self.address)

    @property
    def physical_key(self) -> tuple[int, ...]:
        """Functions with one key are one physical device. A VF is a device of its own even when
        other VFs share its slot number (07:10.0 and 07:10.4 are two VFs, not one card)."""
        address = self.pci_address
        return (*address.slot_key, address.function) if self.is_vf else address.slot_key


@dataclass
class VmSpec:
    devices: list[PassedDevice]
    name: str = "passthrough-vm"
    firmware: str = "ovmf"
    machine: str = "q35"
    primary_gpu: bool = False
    memory_mib: int = 8192
    vcpus: int = 4
    hugepages: bool = False
    hide_kvm: bool = False  # kvm=off / <kvm><hidden/>: NVIDIA drivers before 465 refuse to run under a hypervisor
    hv_vendor_id: str | None = None  # Hyper-V vendor id string the guest sees instead of "Microsoft Hv"
    proxmox_mapping: str | None = None  # a Proxmox cluster resource mapping to use instead of a host address
    pcie: bool | None = None  # devices behind PCIe root ports; None: yes on q35, no on i440fx
    numa_node: int | None = None  # host NUMA node the vCPUs and memory are pinned to; None: not pinned
    numa_cpus: str | None = None  # that node's CPUs in the kernel's short form ("8-15,24-31")
    numa_why: str | None = None  # why that node, or why none on a host with several nodes
    numa_warning: str | None = None  # a chosen node the passed devices are not known to sit on: what it costs

    @property
    def uses_pcie(self) -> bool:
        return self.machine == "q35" if self.pcie is None else self.pcie

    @property
    def primary(self) -> PassedDevice | None:
        return next((device for device in self.devices if device.x_vga), None)

    def device(self, address: str) -> PassedDevice | None:
        return next((device for device in self.devices if device.address == address), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, inventory: Inventory) -> None:
        """Raise :class:`ConfigError` or :class:`UnknownDevice` for a VM that cannot work as described."""
        self._validate_options()
        if not self.devices:
            raise ConfigError("No device to pass through.", hint="Pick at least one device from the inventory.")
        seen: set[str] = set()
        for device in self.devices:
            _validate_address(device.address)
            if device.address in seen:
                raise ConfigError(f"{device.address} is listed twice.", hint="List each function once.")
            seen.add(device.address)
            function = require_function(inventory, device.address)
            _validate_device(device, function)
        primaries = [device for device in self.devices if device.x_vga]
        if self.primary_gpu and not primaries:
            raise ConfigError(
                "A primary GPU (x-vga) needs a display device, and none of the devices is one.",
                hint="Add the GPU's VGA function, or turn the primary GPU option off.",
            )
        if len(primaries) > 1:
            raise ConfigError(
                f"Only one device can be the primary GPU; {len(primaries)} are marked: "
                + ", ".join(device.address for device in primaries)
                + ".",
                hint="Mark the one the guest should boot on.",
            )
        if primaries and not self.primary_gpu:
            raise ConfigError(
                f"{primaries[0].address} is marked x-vga but the VM has no primary GPU.",
                hint="Turn the primary GPU option on, or clear x-vga.",
            )

    def _validate_options(self) -> None:
        # fullmatch: with match, "$" would also accept the name followed by a newline.
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"{self.name!r} is not a usable VM name.",
                hint="Use 1 to 63 letters, digits, dots, dashes or underscores, starting with a letter or digit.",
            )
        if self.firmware not in FIRMWARES:
            raise ConfigError(f"Firmware {self.firmware!r} is not one of {', '.join(FIRMWARES)}.")
        if self.machine not in MACHINES:
            raise ConfigError(f"Machine {self.machine!r} is not one of {', '.join(MACHINES)}.")
        if self.pcie and self.machine != "q35":
            # Proxmox refuses the same combination: "q35 machine model is not enabled".
            raise ConfigError(
                "PCIe placement (pcie=1) needs the q35 machine; i440fx has no PCI Express bus.",
                hint="Choose machine q35, or turn PCIe placement off.",
            )
        if not isinstance(self.memory_mib, int) or self.memory_mib < 256:
            raise ConfigError(f"Memory {self.memory_mib!r} MiB is too small.", hint="Give at least 256 MiB.")
        if not isinstance(self.vcpus, int) or not 1 <= self.vcpus <= 1024:
            raise ConfigError(f"{self.vcpus!r} vCPUs is not a usable count.", hint="Give between 1 and 1024.")
        if self.hv_vendor_id is not None and not (
            isinstance(self.hv_vendor_id, str) and _HV_VENDOR_ID.fullmatch(self.hv_vendor_id)
        ):
            raise ConfigError(
                f"hv_vendor_id {self.hv_vendor_id!r} is not usable.",
                hint="Use 1 to 12 letters, digits, dashes or underscores (QEMU keeps 12 bytes).",
            )
        self._validate_numa()
        if self.proxmox_mapping is not None and not (
            isinstance(self.proxmox_mapping, str) and _PVE_CONFIGID.fullmatch(self.proxmox_mapping)
        ):
            raise ConfigError(
                f"{self.proxmox_mapping!r} is not a Proxmox mapping name.",
                hint="Mapping names start with a letter and hold letters, digits, dashes or underscores.",
            )

    def _validate_numa(self) -> None:
        if self.numa_node is None and self.numa_cpus is None:
            return
        if not isinstance(self.numa_node, int) or isinstance(self.numa_node, bool) or self.numa_node < 0:
            raise ConfigError(
                f"NUMA node {self.numa_node!r} is not a node number.",
                hint="Give the node the passed devices sit on (their numa_node), or leave the VM unpinned.",
            )
        try:
            cpus = parse_cpulist(self.numa_cpus) if isinstance(self.numa_cpus, str) else []
        except ValueError:
            cpus = []
        if not cpus:
            raise ConfigError(
                f"{self.numa_cpus!r} is not a list of the CPUs of NUMA node {self.numa_node}.",
                hint="Write it as the kernel does in sys/devices/system/node/nodeN/cpulist, e.g. 8-15,24-31.",
            )
        # The generators write the list; its short form is all they may write.
        self.numa_cpus = cpulist_text(cpus)


def require_function(inventory: Inventory, address: str) -> PciFunction:
    return inventory.require(address)


def _validate_address(address: str) -> None:
    """Addresses are written into every target as they are, so only the full form is accepted
    (a hand-built spec or a JSON inventory could hold ``01:00.0`` or one with a newline after it)."""
    if not isinstance(address, str) or address != str(PciAddress.parse(address)):
        raise ConfigError(
            f"{address!r} is not a PCI address in full form.",
            hint="Write it as domain:bus:slot.function in hex, for example 0000:01:00.0.",
        )


def _validate_device(device: PassedDevice, function: PciFunction) -> None:
    if function.is_bridge:
        raise ConfigError(
            f"{device.address} is a PCI bridge; bridges stay with the host and are never passed.",
            hint="Pick the devices behind the bridge instead.",
        )
    if function.is_host_bridge:
        raise ConfigError(
            f"{device.address} is a host bridge; it belongs to the platform and cannot go to a VM.",
            hint="Pick an endpoint device.",
        )
    if device.x_vga and (function.class_code or "")[:4] != "0300":
        # vfio-pci offers the legacy VGA region only for VGA-compatible functions.
        raise ConfigError(
            f"{device.address} ({function.label}) is not a VGA-compatible controller, so it cannot be the "
            "primary GPU (x-vga).",
            hint="Mark the GPU's VGA function (class 0300) as primary, or turn the primary GPU option off.",
        )
    if device.rom_file is not None:
        if (
            not device.rom_file.startswith("/")
            or any(char in device.rom_file for char in ",'\"")
            or UNSAFE.search(device.rom_file)
        ):
            raise ConfigError(
                f"ROM file {device.rom_file!r} is not usable.",
                hint="Give an absolute path on the host without commas, quotes or control characters, "
                "e.g. /usr/share/vgabios/gpu.rom.",
            )
        if not device.rombar:
            raise ConfigError(
                f"{device.address} has a ROM file and rombar off; with the ROM BAR hidden the guest never sees the file.",
                hint="Keep rombar on when you give a ROM file.",
            )


@dataclass(frozen=True)
class HostRequirement:
    """Something the host needs for the generated config to work, and whether it has it now."""

    id: str
    text: str  # what is needed
    met: bool | None  # None: cannot be seen from the inventory
    evidence: str  # what was read, or why it cannot be read

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GeneratedConfig:
    target: str
    text: str
    filename: str
    media_type: str
    notes: dict[str, str] = field(default_factory=dict)  # option as it appears in the text -> why it is there
    host_requirements: list[HostRequirement] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """True when every requirement that can be checked is met and none is known to fail."""
        return all(requirement.met is not False for requirement in self.host_requirements)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "text": self.text,
            "filename": self.filename,
            "media_type": self.media_type,
            "notes": self.notes,
            "host_requirements": [requirement.to_json() for requirement in self.host_requirements],
            "ready": self.ready,
        }
