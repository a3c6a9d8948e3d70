"""Every PCI function of a host, with its IOMMU group and what passthrough needs to know.

``scan(tree)`` reads ``sys/bus/pci/devices`` under a :class:`HostTree` and returns an
:class:`~passthrough.pci.model.Inventory` (the types and their JSON contract live in
:mod:`passthrough.pci.model`). The scan reads the functions, then asks
:mod:`passthrough.pci.hostcritical` and :mod:`passthrough.pci.isolation` to judge them. A
fact the kernel does not expose (an old kernel without ``reset_method``, a capture without
``iommu_group`` links) is ``None``, never guessed.
"""

from __future__ import annotations

import os

from passthrough.host import PCI_DEVICES, HostTree, as_tree
from passthrough.host import read_text as _read_attribute
from passthrough.pci import isolation, pciids
from passthrough.pci.address import is_address
from passthrough.pci.hostcritical import find_host_critical
from passthrough.pci.model import Bar, Inventory, PciFunction

# Attributes read for every function; the benchmark's raw-read floor reads the same list.
ID_ATTRIBUTES = ("vendor", "device", "class", "revision", "subsystem_vendor", "subsystem_device")
LINK_ATTRIBUTES = ("current_link_speed", "current_link_width", "max_link_speed", "max_link_width")
OTHER_ATTRIBUTES = ("numa_node", "reset_method", "driver_override", "resource")
NUMA_NODES = "sys/devices/system/node"

# Flags in a ``resource`` line (include/linux/ioport.h). IORESOURCE_PREFETCH moved from
# 0x1000 to 0x2000 in Linux 3.x, so prefetch is read from the low bits instead, which are
# the BAR register's own (PCI_BASE_ADDRESS_MEM_PREFETCH, PCI_BASE_ADDRESS_MEM_TYPE_64).
IORESOURCE_MEM = 0x200
IORESOURCE_MEM_64 = 0x100000
BAR_PREFETCH = 0x8
BAR_TYPE_64 = 0x4


def scan(tree: HostTree | str | os.PathLike[str]) -> Inventory:
    """Read every PCI function and group of the host at ``tree``. Never raises for odd kernels."""
    tree = as_tree(tree)
    names = pciids.load()
    devices_dir = tree.path(PCI_DEVICES)
    try:
        # Domains may be wider than four digits (10000:00:04.0): order by domain width first.
        entries = sorted(
            (name for name in os.listdir(devices_dir) if is_address(name)), key=lambda n: (n.index(":"), n)
        )
    except OSError:
        entries = []
    functions = [_read_function(tree, devices_dir, name, names) for name in entries]
    host_critical = find_host_critical(tree, functions)
    acs_override = "pcie_acs_override=" in (tree.read("proc/cmdline") or "")
    groups = isolation.build_groups(functions, host_critical, acs_override=acs_override)
    return Inventory(
        devices=functions, groups=groups, host_critical=host_critical, root=tree.root, numa_nodes=numa_nodes(tree)
    )


def numa_nodes(tree: HostTree) -> dict[int, str]:
    """Each NUMA node with CPUs and its ``cpulist`` as the kernel writes it ("0-7,16-23").

    Nodes without CPUs (memory-only, CXL) are left out: nothing can be pinned to them.
    """
    found: dict[int, str] = {}
    numbers = sorted(int(name[4:]) for name in tree.listdir(NUMA_NODES) if name[:4] == "node" and name[4:].isdigit())
    for number in numbers:
        cpus = tree.read(f"{NUMA_NODES}/node{number}/cpulist")
        if cpus:
            found[number] = cpus
    return found


def parse_resource(text: str) -> list[Bar]:
    """The memory BARs in the text of a ``resource`` file (empty when it is not one).

    The first six lines are BARs 0-5 as ``start end flags`` in hex; the seventh is the
    expansion ROM, which the guest sizes itself, so it is left out.
    """
    bars = []
    for index, line in enumerate(text.splitlines()[:6]):
        try:
            start, end, flags = (int(part, 16) for part in line.split()[:3])
        except ValueError:
            return []
        if not flags & IORESOURCE_MEM or end <= start:
            continue
        bars.append(
            Bar(
                index=index,
                size=end - start + 1,
                is_64bit=bool(flags & IORESOURCE_MEM_64) or (flags & 0x6) == BAR_TYPE_64,
                prefetchable=bool(flags & BAR_PREFETCH),
            )
        )
    return bars


def _hex(value: str | None, width: int) -> str | None:
    """``0x10de`` -> ``10de``; anything that is not hex -> None."""
    if not value:
        return None
    text = value[2:] if value.startswith("0x") else value
    try:
        return f"{int(text, 16):0{width}x}"
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        return None


def _link_name(path: str) -> str | None:
    try:
        return os.readlink(path).rstrip("/").rsplit("/", 1)[-1]
    except OSError:
        return None


def _read_function(tree: HostTree, devices_dir: str, name: str, names: pciids.PciIds) -> PciFunction:
    base = f"{devices_dir}/{name}/"
    try:
        present = set(os.listdir(base))
    except OSError:
        present = set()
    values = {attribute: _read_attribute(base + attribute) for attribute in ID_ATTRIBUTES}
    function = PciFunction(
        address=name,
        vendor_id=_hex(values["vendor"], 4),
        device_id=_hex(values["device"], 4),
        subsystem_vendor_id=_hex(values["subsystem_vendor"], 4),
        subsystem_device_id=_hex(values["subsystem_device"], 4),
        class_code=_hex(values["class"], 6),
        revision=_hex(values["revision"], 2),
    )
    function.vendor_name = names.vendor(function.vendor_id)
    function.device_name = names.device(function.vendor_id, function.device_id)
    function.subsystem_vendor_name = names.vendor(function.subsystem_vendor_id)
    function.subsystem_name = names.subsystem(
        function.vendor_id, function.device_id, function.subsystem_vendor_id, function.subsystem_device_id
    )
    function.class_name = names.class_name(function.class_code)

    if "driver" in present:
        # The link's name, even when its target is missing: a capture that did not copy
        # sys/bus/pci/drivers (hwloc's) still records which driver held the function.
        function.driver = _link_name(base + "driver")
    if "driver_override" in present:
        override = _read_attribute(base + "driver_override")
        function.driver_override = None if override in (None, "", "(null)") else override
    if "iommu_group" in present:
        function.iommu_group = _int(_link_name(base + "iommu_group"))
    if "reset_method" in present:
        methods = _read_attribute(base + "reset_method")
        function.reset_methods = None if methods is None else methods.split()
    # Without the reset_method attribute (kernels before 5.15) the reset file alone tells.
    function.has_reset = "reset" in present if present else None
    if "boot_vga" in present:
        boot_vga = _read_attribute(base + "boot_vga")
        function.boot_vga = None if boot_vga not in ("0", "1") else boot_vga == "1"
    if "sriov_totalvfs" in present:
        function.sriov_totalvfs = _int(_read_attribute(base + "sriov_totalvfs"))
        function.sriov_numvfs = _int(_read_attribute(base + "sriov_numvfs"))
        virtfns = sorted(
            (entry for entry in present if entry.startswith("virtfn")), key=lambda entry: int(entry[6:] or 0)
        )
        function.virtfns = [vf for vf in (_link_name(base + entry) for entry in virtfns) if vf]
    if "physfn" in present:
        function.physfn = _link_name(base + "physfn")
    if "current_link_speed" in present:
        function.current_link_speed = _speed(_read_attribute(base + "current_link_speed"))
        function.current_link_width = _width(_read_attribute(base + "current_link_width"))
        function.max_link_speed = _speed(_read_attribute(base + "max_link_speed"))
        function.max_link_width = _width(_read_attribute(base + "max_link_width"))
    if "numa_node" in present:
        node = _int(_read_attribute(base + "numa_node"))
        # -1 is the kernel's way of saying firmware gave no locality.
        function.numa_node = node if node is not None and node >= 0 else None
    if "resource" in present:
        resource = _read_attribute(base + "resource")
        function.bars = None if resource is None else parse_resource(resource)

    target = _resolve_device_path(tree, devices_dir, name)
    function.sysfs_path = target
    if target:
        ancestors = [part for part in target.split("/")[:-1] if is_address(part)]
        function.bridges = list(reversed(ancestors))
        function.parent = function.bridges[0] if function.bridges else None
    return function


def _resolve_device_path(tree: HostTree, devices_dir: str, name: str) -> str | None:
    """``sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0`` for ``0000:01:00.0``."""
    link = f"{devices_dir}/{name}"
    try:
        target = os.readlink(link)
    except OSError:
        return None  # a plain directory: a capture that lost its links; no topology
    if target.startswith("/"):
        return tree.relative(target) if not tree.is_live else target.lstrip("/")
    return tree.relative(os.path.normpath(os.path.join(devices_dir, target)))


def _speed(value: str | None) -> str | None:
    if not value or value.lower().startswith("unknown"):
        return None
    return value


def _width(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.lstrip("x"))
    except ValueError:
        return None
