"""Write a host tree in the sysfs layout from a description.

Tests, benchmarks and the demo need hosts that nobody has at hand: a GPU behind a PCIe
switch, an E810 with 128 VFs, a B550 chipset group. A
:class:`~passthrough.hosttrees.spec.HostSpec` describes one and
:func:`write_tree` lays it out exactly as the kernel does (device directories under
``sys/devices/pciDDDD:BB``, relative links from ``sys/bus/pci/devices``, ``driver``,
``iommu_group``, ``physfn``/``virtfnN``, ``sys/kernel/iommu_groups``, ``sys/class/iommu``),
so :func:`passthrough.pci.scan.scan`, pciutils' ``lspci -A linux-sysfs`` and the kernel
double all read it as they would read ``/``. What surrounds the functions (proc files,
disks, network interfaces, consoles) is written by :mod:`passthrough.hosttrees.surroundings`.
"""

from __future__ import annotations

import os
import struct
from collections import defaultdict

from passthrough.hosttrees.files import relative_link, write_file
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.surroundings import write_block_and_net, write_console, write_proc
from passthrough.pci.address import PciAddress


def _root_bus_name(address: PciAddress) -> str:
    return f"pci{address.domain:04x}:{address.bus:02x}"


def device_dirs(spec: HostSpec, sys_dir: str) -> dict[str, str]:
    """Where each function's directory lives under ``sys/devices``, following parents."""
    by_address = {function.address: function for function in spec.functions}
    dirs: dict[str, str] = {}

    def place(function: FunctionSpec, depth: int = 0) -> str:
        if function.address in dirs:
            return dirs[function.address]
        if depth > 64:
            raise ValueError(f"parent loop at {function.address}")
        upstream = function.parent or function.physfn and by_address[function.physfn].parent
        if upstream and upstream in by_address:
            base = place(by_address[upstream], depth + 1)
        else:
            base = f"{sys_dir}/devices/{_root_bus_name(PciAddress.parse(function.address))}"
        dirs[function.address] = f"{base}/{function.address}"
        return dirs[function.address]

    for function in spec.functions:
        place(function)
    return dirs


def _config_space(function: FunctionSpec, multifunction: bool, primary: int, secondary: int, subordinate: int) -> bytes:
    """The first 64 bytes of config space, consistent with the attribute files (what lspci reads unprivileged)."""
    header_type = (0x01 if function.is_bridge else 0x00) | (0x80 if multifunction else 0)
    class_value = int(function.class_code, 16)
    data = bytearray(64)
    struct.pack_into(
        "<HHHHB",
        data,
        0,
        int(function.vendor, 16),
        int(function.device, 16),
        0x0406,
        0x0010,
        int(function.revision, 16),
    )
    data[9] = class_value & 0xFF
    data[10] = (class_value >> 8) & 0xFF
    data[11] = (class_value >> 16) & 0xFF
    data[14] = header_type
    if function.is_bridge:
        data[0x18], data[0x19], data[0x1A] = primary, secondary, subordinate
    else:
        struct.pack_into(
            "<HH", data, 0x2C, int(function.subsystem_vendor or "0", 16), int(function.subsystem_device or "0", 16)
        )
    return bytes(data)


def _secondary_buses(spec: HostSpec) -> dict[str, tuple[int, int]]:
    """(secondary, subordinate) bus numbers for every bridge."""
    children: dict[str, list[FunctionSpec]] = defaultdict(list)
    for function in spec.functions:
        if function.parent:
            children[function.parent].append(function)
    ranges: dict[str, tuple[int, int]] = {}

    def visit(function: FunctionSpec) -> tuple[int, int]:
        if function.address in ranges:
            return ranges[function.address]
        below = children.get(function.address, [])
        buses = [PciAddress.parse(child.address).bus for child in below]
        secondary = function.secondary_bus if function.secondary_bus is not None else (min(buses) if buses else 0)
        subordinate = max([secondary] + [visit(child)[1] for child in below if child.is_bridge])
        ranges[function.address] = (secondary, subordinate)
        return ranges[function.address]

    for function in spec.functions:
        if function.is_bridge:
            visit(function)
    return ranges


def write_tree(spec: HostSpec, root: str | os.PathLike[str]) -> str:
    """Lay ``spec`` out under ``root``; returns the root as a string."""
    root = os.fspath(root)
    sys_dir = f"{root}/sys"
    dirs = device_dirs(spec, sys_dir)
    slots: dict[tuple[int, int, int], int] = defaultdict(int)
    for function in spec.functions:
        slots[PciAddress.parse(function.address).slot_key] += 1
    bridge_ranges = _secondary_buses(spec)
    virtfns: dict[str, list[str]] = defaultdict(list)
    for function in spec.functions:
        if function.physfn:
            virtfns[function.physfn].append(function.address)

    drivers = sorted({function.driver for function in spec.functions if function.driver} | {"pcieport"})
    for driver in drivers:
        _write_driver_dir(sys_dir, driver)
    for driver, module in spec.driver_modules.items():
        _write_driver_dir(sys_dir, driver)
        relative_link(f"{sys_dir}/module/{module}/drivers/pci:{driver}", f"{sys_dir}/bus/pci/drivers/{driver}")
        relative_link(f"{sys_dir}/bus/pci/drivers/{driver}/module", f"{sys_dir}/module/{module}")
    write_file(f"{sys_dir}/bus/pci/drivers_probe", "")
    write_file(f"{sys_dir}/bus/pci/rescan", "")
    os.makedirs(f"{sys_dir}/kernel/iommu_groups", exist_ok=True)

    for function in spec.functions:
        address = PciAddress.parse(function.address)
        device_dir = dirs[function.address]
        primary = PciAddress.parse(function.parent).bus if function.parent else address.bus
        secondary, subordinate = bridge_ranges.get(function.address, (0, 0))
        write_function(
            spec, function, device_dir, sys_dir, slots[address.slot_key] > 1, (primary, secondary, subordinate), virtfns
        )

    _write_iommu(spec, sys_dir, dirs)
    write_proc(spec, root)
    write_block_and_net(spec, root, dirs)
    write_console(spec, root, dirs)
    if spec.efi:
        os.makedirs(f"{sys_dir}/firmware/efi/efivars", exist_ok=True)
    if spec.dev_vfio:
        for name in spec.dev_vfio:
            write_file(f"{root}/dev/vfio/{name}", "")
    for relative, text in spec.files.items():
        write_file(f"{root}/{relative}", text)
    if spec.dmesg is not None:
        write_file(f"{root}/dmesg.txt", spec.dmesg)
    return root


def _write_driver_dir(sys_dir: str, driver: str) -> None:
    base = f"{sys_dir}/bus/pci/drivers/{driver}"
    os.makedirs(base, exist_ok=True)
    for name in ("bind", "unbind", "new_id", "remove_id"):
        if not os.path.exists(f"{base}/{name}"):
            write_file(f"{base}/{name}", "")


def write_function(
    spec: HostSpec,
    function: FunctionSpec,
    device_dir: str,
    sys_dir: str,
    multifunction: bool,
    bus_numbers: tuple[int, int, int],
    virtfns: dict[str, list[str]],
) -> None:
    """One function's directory: attributes, config space, and its links to the bus, its
    driver, its physfn or virtfns. The kernel double calls it to create a VF."""
    os.makedirs(device_dir, exist_ok=True)
    attributes = {
        "vendor": f"0x{function.vendor}",
        "device": f"0x{function.device}",
        "class": f"0x{function.class_code}",
        "revision": f"0x{function.revision}",
        "subsystem_vendor": f"0x{function.subsystem_vendor or '0000'}",
        "subsystem_device": f"0x{function.subsystem_device or '0000'}",
        "numa_node": str(function.numa_node),
        "driver_override": function.driver_override or "(null)",
        "enable": "1" if function.driver else "0",
        "irq": "0",
        "local_cpulist": f"0-{spec.cpu_count - 1}",
        "modalias": (
            f"pci:v0000{function.vendor.upper()}d0000{function.device.upper()}"
            f"sv0000{(function.subsystem_vendor or '0000').upper()}sd0000{(function.subsystem_device or '0000').upper()}"
            f"bc{function.class_code[:2].upper()}sc{function.class_code[2:4].upper()}i{function.class_code[4:].upper()}"
        ),
        "remove": "",
        "rescan": "",
    }
    uevent = [
        f"PCI_CLASS={int(function.class_code, 16):X}",
        f"PCI_ID={function.vendor.upper()}:{function.device.upper()}",
        f"PCI_SUBSYS_ID={(function.subsystem_vendor or '0000').upper()}:{(function.subsystem_device or '0000').upper()}",
        f"PCI_SLOT_NAME={function.address}",
        f"MODALIAS={attributes['modalias']}",
    ]
    if function.driver:
        uevent.insert(0, f"DRIVER={function.driver}")
    attributes["uevent"] = "\n".join(uevent)
    if function.boot_vga is not None:
        attributes["boot_vga"] = "1" if function.boot_vga else "0"
    if function.reset_methods is not None:
        attributes["reset_method"] = " ".join(function.reset_methods)
    if function.has_reset or function.reset_methods:
        attributes["reset"] = ""
    if function.link:
        current_speed, current_width, max_speed, max_width = function.link
        attributes.update(
            current_link_speed=current_speed,
            current_link_width=str(current_width),
            max_link_speed=max_speed,
            max_link_width=str(max_width),
        )
    if function.sriov_totalvfs is not None:
        attributes.update(
            sriov_totalvfs=str(function.sriov_totalvfs),
            sriov_numvfs=str(function.sriov_numvfs),
            sriov_offset="128",
            sriov_stride="1",
            sriov_vf_device=function.extra.get("sriov_vf_device", function.device),
            sriov_drivers_autoprobe="1",
        )
    attributes.update({key: value for key, value in function.extra.items() if key != "sriov_vf_device"})
    for name, value in attributes.items():
        write_file(f"{device_dir}/{name}", value + "\n" if value else "")
    write_file(f"{device_dir}/config", _config_space(function, multifunction, *bus_numbers))

    relative_link(f"{sys_dir}/bus/pci/devices/{function.address}", device_dir)
    relative_link(f"{device_dir}/subsystem", f"{sys_dir}/bus/pci")
    if function.driver:
        _write_driver_dir(sys_dir, function.driver)
        relative_link(f"{device_dir}/driver", f"{sys_dir}/bus/pci/drivers/{function.driver}")
        relative_link(f"{sys_dir}/bus/pci/drivers/{function.driver}/{function.address}", device_dir)
    if function.physfn:
        parent_dir = os.path.dirname(device_dir) + f"/{function.physfn}"
        relative_link(f"{device_dir}/physfn", parent_dir)
    for index, vf in enumerate(virtfns.get(function.address, [])):
        relative_link(f"{device_dir}/virtfn{index}", os.path.dirname(device_dir) + f"/{vf}")


def _write_iommu(spec: HostSpec, sys_dir: str, dirs: dict[str, str]) -> None:
    grouped = [function for function in spec.functions if function.iommu_group is not None]
    for function in grouped:
        group_dir = f"{sys_dir}/kernel/iommu_groups/{function.iommu_group}"
        write_file(f"{group_dir}/type", "DMA\n")
        write_file(f"{group_dir}/reserved_regions", "0x00000000fee00000 0x00000000feefffff msi\n")
        relative_link(f"{dirs[function.address]}/iommu_group", group_dir)
        relative_link(f"{group_dir}/devices/{function.address}", dirs[function.address])
    if not spec.iommu or not grouped:
        os.makedirs(f"{sys_dir}/class/iommu", exist_ok=True)
        return
    units = spec.iommu_units or {("dmar0" if spec.iommu == "intel" else "ivhd0"): [f.address for f in grouped]}
    for unit, addresses in units.items():
        unit_dir = f"{sys_dir}/devices/virtual/iommu/{unit}"
        os.makedirs(f"{unit_dir}/devices", exist_ok=True)
        write_file(f"{unit_dir}/{'intel-iommu/version' if spec.iommu == 'intel' else 'amd-iommu/cap'}", "1:0\n")
        relative_link(f"{sys_dir}/class/iommu/{unit}", unit_dir)
        for address in addresses:
            canonical = str(PciAddress.parse(address))
            relative_link(f"{unit_dir}/devices/{canonical}", dirs[canonical])
            relative_link(f"{dirs[canonical]}/iommu", unit_dir)
