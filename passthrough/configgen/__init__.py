"""VM configuration for passed-through PCI devices, for five hypervisors, from one :class:`VmSpec`.

``build_spec(inventory, addresses, **options)`` turns the user's picks into a spec, adding
what has to move with them (the other endpoints of their IOMMU groups, the other
functions of the same card) and saying why; ``generate(inventory, spec, target)`` renders
it for one target and lists what the host needs for it to work, checked against the
inventory now. Every value that came from the host (names, drivers, paths, addresses)
enters a target's text through :mod:`passthrough.configgen.safe`, one function per context.

May import: ``passthrough.pci`` (the inventory, groups and addresses a spec is built from),
``passthrough.topology`` (where a device sits, for NUMA pinning), ``passthrough.host`` and
``passthrough.errors``. Never ``ops`` or ``vms``: generating a config changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from passthrough.configgen import hostcheck, hyperv, libvirt, proxmox, qemu, vmware
from passthrough.configgen.layout import read_bars
from passthrough.configgen.numa import AUTO, NumaPin, pinning
from passthrough.configgen.spec import (
    Bar,
    ConfigError,
    GeneratedConfig,
    HostRequirement,
    PassedDevice,
    VmSpec,
    require_function,
)
from passthrough.host import HostTree
from passthrough.pci.address import PciAddress
from passthrough.pci.isolation import describe
from passthrough.pci.model import Inventory, PciFunction

__all__ = [
    "TARGETS",
    "Bar",
    "ConfigError",
    "GeneratedConfig",
    "HostRequirement",
    "NumaPin",
    "PassedDevice",
    "VmSpec",
    "build_spec",
    "generate",
]

TARGETS: Mapping[str, str] = MappingProxyType(
    {
        "qemu": "QEMU command line",
        "libvirt": "libvirt domain XML",
        "proxmox": "Proxmox VE VM config",
        "vmware": "VMware ESXi .vmx",
        "hyperv": "Hyper-V DDA PowerShell script",
    }
)

_GENERATORS: dict[str, Callable[[Inventory, VmSpec, list[HostRequirement]], GeneratedConfig]] = {
    "qemu": qemu.generate,
    "libvirt": libvirt.generate,
    "proxmox": proxmox.generate,
    "vmware": vmware.generate,
    "hyperv": hyperv.generate,
}


def generate(inventory: Inventory, spec: VmSpec, target: str) -> GeneratedConfig:
    if target not in TARGETS:
        raise ConfigError(f"{target!r} is not a target.", hint=f"Choose one of {', '.join(TARGETS)}.")
    spec.validate(inventory)
    requirements = hostcheck.requirements(inventory, spec, target)
    return _GENERATORS[target](inventory, spec, requirements)


def build_spec(
    inventory: Inventory,
    addresses: Iterable[str],
    *,
    name: str = "passthrough-vm",
    firmware: str = "ovmf",
    machine: str = "q35",
    primary_gpu: bool = False,
    rom_file: str | None = None,
    rombar: bool = True,
    rom_device: str | None = None,
    memory_mib: int = 8192,
    vcpus: int = 4,
    hugepages: bool = False,
    hide_kvm: bool = False,
    hv_vendor_id: str | None = None,
    proxmox_mapping: str | None = None,
    pcie: bool | None = None,
    bars: Mapping[str, list[Bar]] | None = None,
    tree: HostTree | str | None = None,
    numa_pin: NumaPin | str | bool = AUTO,
) -> VmSpec:
    """A validated spec for the picked ``addresses`` plus everything that must move with them.

    ``rom_file``/``rombar`` apply to ``rom_device``, by default the primary GPU, else the one
    display function, else the only function. BAR sizes come from ``bars``, else are read
    from ``tree`` (the host the inventory was scanned from), else are the ones the scan
    recorded; without any they stay unknown and the MMIO settings fall back to documented
    defaults. ``numa_pin`` says where the vCPUs and memory are pinned: ``"auto"``, on a host
    with several NUMA nodes the node the devices sit on; ``"off"``, nowhere; a node number
    (or its digits), that node, refused when the host has no such node, with
    ``numa_warning`` saying what it costs when the devices sit elsewhere. ``numa_why`` says
    which node and why, or why none.
    """
    picked = _parse_picks(inventory, addresses)
    devices = [PassedDevice(address) for address in picked]
    for address, reason in _companions(inventory, picked):
        devices.append(PassedDevice(address, added_because=reason))
    for device in devices:
        device.is_vf = require_function(inventory, device.address).is_vf
    devices = _physical_order(devices)
    spec = VmSpec(
        devices=devices,
        name=name,
        firmware=firmware,
        machine=machine,
        primary_gpu=primary_gpu,
        memory_mib=memory_mib,
        vcpus=vcpus,
        hugepages=hugepages,
        hide_kvm=hide_kvm,
        hv_vendor_id=hv_vendor_id,
        proxmox_mapping=proxmox_mapping,
        pcie=pcie,
    )
    if primary_gpu:
        primary = _primary_display(inventory, devices)
        if primary is not None:
            primary.x_vga = True
    if rom_file is not None or not rombar:
        target = _rom_target(inventory, spec, rom_device)
        target.rom_file = rom_file
        target.rombar = rombar
    for device in devices:
        if bars is not None and device.address in bars:
            device.bars = list(bars[device.address])
        elif tree is not None:
            device.bars = read_bars(tree, device.address)
        else:
            device.bars = list(require_function(inventory, device.address).bars or [])
    pinned = pinning(inventory, [device.address for device in devices], numa_pin)
    spec.numa_node, spec.numa_cpus, spec.numa_why, spec.numa_warning = (
        pinned.node,
        pinned.cpus,
        pinned.why,
        pinned.warning,
    )
    spec.validate(inventory)
    return spec


def _parse_picks(inventory: Inventory, addresses: Iterable[str]) -> list[str]:
    if isinstance(addresses, str):
        addresses = [addresses]
    picked: list[str] = []
    for text in addresses:
        address = str(PciAddress.parse(text))
        require_function(inventory, address)
        if address not in picked:
            picked.append(address)
    if not picked:
        raise ConfigError("No device to pass through.", hint="Pick at least one device from the inventory.")
    return picked


def _companions(inventory: Inventory, picked: list[str]) -> list[tuple[str, str]]:
    """Functions that must go with the picks, each with the reason, until nothing new is added.

    vfio hands a VM whole IOMMU groups, so every endpoint of a picked function's group goes
    too (bridges stay); a card whose functions sit in separate groups (a Navi GPU behind
    its switch) brings its other functions and, with them, their groups.
    """
    added: dict[str, str] = {}
    queue = list(picked)
    while queue:
        address = queue.pop(0)
        function = require_function(inventory, address)
        group = inventory.group_of(address)
        if group is None:
            # No IOMMU groups (IOMMU off, or a non-Linux target): only the device's own functions.
            candidates = [
                (other.address, "function of the same physical device as " + describe(function))
                for other in inventory.devices
                if _same_device(other, function) and not other.is_bridge and not other.is_host_bridge
            ]
        else:
            candidates = []
            for other in group.endpoints:
                if _same_device(require_function(inventory, other), function):
                    why = f"function of the same physical device as {describe(function)}"
                else:
                    why = f"shares IOMMU group {group.id} with {describe(function)}; vfio gives a VM the whole group"
                candidates.append((other, why))
            for other in group.companions:
                other_group = inventory.group_of(other)
                where = f"IOMMU group {other_group.id}" if other_group else "no IOMMU group"
                candidates.append((other, f"part of the same card as {describe(function)}, in {where}"))
        for other, why in candidates:
            if other in picked or other in added:
                continue
            added[other] = why
            queue.append(other)
    return list(added.items())


def _physical_order(devices: list[PassedDevice]) -> list[PassedDevice]:
    """Devices grouped by physical device in order of first appearance, functions in order."""
    order: list[tuple[int, ...]] = []
    for device in devices:
        if device.physical_key not in order:
            order.append(device.physical_key)
    return sorted(devices, key=lambda device: (order.index(device.physical_key), device.pci_address.function))


def _same_device(one: PciFunction, other: PciFunction) -> bool:
    """Two functions of one physical device; SR-IOV VFs that share a slot number are not."""
    return one.pci_address.slot_key == other.pci_address.slot_key and not (one.is_vf or other.is_vf)


def _primary_display(inventory: Inventory, devices: list[PassedDevice]) -> PassedDevice | None:
    """The VGA function the guest boots on: the first VGA-compatible pick, else the first one passed."""
    for wanted in ("0300", "03"):
        # A 3D controller (0302) is returned only to be refused by validation with the reason.
        matching = [
            device
            for device in devices
            if (require_function(inventory, device.address).class_code or "").startswith(wanted)
        ]
        if matching:
            return next((device for device in matching if device.picked), matching[0])
    return None


def _rom_target(inventory: Inventory, spec: VmSpec, rom_device: str | None) -> PassedDevice:
    if rom_device is not None:
        address = str(PciAddress.parse(rom_device))
        device = spec.device(address)
        if device is None:
            raise ConfigError(
                f"rom_device {address} is not one of the devices passed to this VM.",
                hint="Name one of: " + ", ".join(device.address for device in spec.devices) + ".",
            )
        return device
    if spec.primary is not None:
        return spec.primary
    displays = [device for device in spec.devices if require_function(inventory, device.address).is_display]
    if len(displays) == 1:
        return displays[0]
    if len(spec.devices) == 1:
        return spec.devices[0]
    raise ConfigError(
        "A ROM option was given but it is not clear which device it is for.",
        hint="Say which with rom_device (one of " + ", ".join(device.address for device in spec.devices) + ").",
    )
