"""The description of a host tree: its PCI functions and what surrounds them.

:class:`HostSpec` and :class:`FunctionSpec` are plain data, written out by
:func:`passthrough.hosttrees.tree.write_tree` and built from pasted listings by
:mod:`passthrough.hosttrees.listing_hosts` and from published machines by
:mod:`passthrough.hosttrees.realworld`. They sit below every writer and builder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passthrough.pci.address import PciAddress

GRAPHICS_CONSOLES = ("efifb", "simpledrm", "vesafb", "vgacon", "native")


@dataclass
class FunctionSpec:
    address: str
    vendor: str
    device: str
    class_code: str = "000000"
    revision: str = "00"
    subsystem_vendor: str | None = None
    subsystem_device: str | None = None
    driver: str | None = None
    iommu_group: int | None = None
    parent: str | None = None  # upstream bridge; None: on a root bus
    boot_vga: bool | None = None  # the kernel writes boot_vga for display functions only
    reset_methods: list[str] | None = None  # None: no reset_method file (kernels < 5.15)
    has_reset: bool = False
    numa_node: int = -1
    link: tuple[str, int, str, int] | None = None  # current speed, width, max speed, width
    sriov_totalvfs: int | None = None
    sriov_numvfs: int = 0
    physfn: str | None = None
    driver_override: str | None = None
    secondary_bus: int | None = None  # bridges; derived from children when None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.address = str(PciAddress.parse(self.address))
        if self.parent:
            self.parent = str(PciAddress.parse(self.parent))
        if self.physfn:
            self.physfn = str(PciAddress.parse(self.physfn))

    @property
    def is_bridge(self) -> bool:
        return self.class_code[:4] == "0604"


@dataclass
class HostSpec:
    functions: list[FunctionSpec] = field(default_factory=list)
    cpu_vendor: str = "GenuineIntel"
    cpu_flags: tuple[str, ...] = ("fpu", "vme", "msr", "pae", "vmx", "x2apic")
    cpu_count: int = 4
    cpuinfo: str | None = None  # a real /proc/cpuinfo wins over the two fields above
    cmdline: str = "BOOT_IMAGE=/boot/vmlinuz root=/dev/nvme0n1p2 ro quiet"
    osrelease: str = "6.8.12-4-pve"
    iommu: str | None = "intel"  # "intel" (dmar units), "amd" (ivhd units) or None
    iommu_units: dict[str, list[str]] | None = None  # unit name -> addresses; default: one unit for all
    interrupt_remapping: bool = True
    efi: bool = True
    modules: tuple[str, ...] = ("kvm_intel", "kvm")
    dev_vfio: tuple[str, ...] = ()
    block_devices: dict[str, str] = field(default_factory=dict)  # disk name -> controller address
    root_source: str | None = None  # "/dev/nvme0n1p2"; its disk must be in block_devices
    root_fstype: str = "ext4"
    net_devices: dict[str, str] = field(default_factory=dict)  # interface -> NIC address
    net_bridges: dict[str, list[str]] = field(default_factory=dict)  # "vmbr0" -> ["enp5s0"]
    default_route: str | None = None  # interface
    console: str | None = None  # one of GRAPHICS_CONSOLES, on the boot VGA function
    # PCI driver -> the module it comes from, written as the driver's ``module`` link the kernel
    # has ("xhci_hcd" -> "xhci_pci"); drivers not listed get none, as in a capture.
    driver_modules: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # extra files: "etc/default/grub" -> text
    dmesg: str | None = None

    def function(self, address: str) -> FunctionSpec:
        wanted = str(PciAddress.parse(address))
        for function in self.functions:
            if function.address == wanted:
                return function
        raise KeyError(address)
