"""Every PCI function of a host, with its IOMMU group and what passthrough needs to know.

``scan(tree)`` reads ``sys/bus/pci/devices`` under a :class:`HostTree` and returns an
:class:`Inventory`; ``to_json``/``from_json`` give the stable JSON contract documented in
the README. A fact the kernel does not expose (an old kernel without ``reset_method``,
a capture without ``iommu_group`` links) is ``None``, never guessed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

from passthrough import pciids
from passthrough.address import PciAddress, is_address
from passthrough.errors import UnknownDevice
from passthrough.host import PCI_DEVICES, HostTree, as_tree
from passthrough.host import read_text as _read_attribute

# Attributes read for every function; the benchmark's raw-read floor reads the same list.
ID_ATTRIBUTES = ("vendor", "device", "class", "revision", "subsystem_vendor", "subsystem_device")
LINK_ATTRIBUTES = ("current_link_speed", "current_link_width", "max_link_speed", "max_link_width")
OTHER_ATTRIBUTES = ("numa_node", "reset_method", "driver_override")

KINDS = {
    "03": "gpu",
    "02": "network",
    "01": "storage",
    "0c03": "usb",
    "0403": "audio",
    "0401": "audio",
    "0604": "bridge",
    "0600": "host-bridge",
}


@dataclass
class PciFunction:
    address: str
    vendor_id: str | None = None
    device_id: str | None = None
    subsystem_vendor_id: str | None = None
    subsystem_device_id: str | None = None
    class_code: str | None = None  # "class" in JSON: six hex digits, base/sub/prog-if
    revision: str | None = None
    vendor_name: str | None = None
    device_name: str | None = None
    subsystem_vendor_name: str | None = None
    subsystem_name: str | None = None
    class_name: str | None = None
    driver: str | None = None
    driver_override: str | None = None
    iommu_group: int | None = None
    reset_methods: list[str] | None = None
    has_reset: bool | None = None
    boot_vga: bool | None = None
    sriov_totalvfs: int | None = None
    sriov_numvfs: int | None = None
    physfn: str | None = None
    virtfns: list[str] = field(default_factory=list)
    current_link_speed: str | None = None
    current_link_width: int | None = None
    max_link_speed: str | None = None
    max_link_width: int | None = None
    numa_node: int | None = None
    parent: str | None = None
    bridges: list[str] = field(default_factory=list)  # nearest first, root port last
    sysfs_path: str | None = None

    @property
    def pci_address(self) -> PciAddress:
        return PciAddress.parse(self.address)

    @property
    def is_bridge(self) -> bool:
        """A PCI-to-PCI or CardBus bridge (header type 1 or 2): vfio lets these stay with the host."""
        return self.class_code is not None and self.class_code[:4] in ("0604", "0607", "0609")

    @property
    def is_host_bridge(self) -> bool:
        return self.class_code is not None and self.class_code[:4] == "0600"

    @property
    def is_display(self) -> bool:
        return self.class_code is not None and self.class_code[:2] == "03"

    @property
    def kind(self) -> str:
        code = self.class_code or ""
        return KINDS.get(code[:4]) or KINDS.get(code[:2]) or "other"

    @property
    def is_vf(self) -> bool:
        return self.physfn is not None

    @property
    def root_port(self) -> str | None:
        return self.bridges[-1] if self.bridges else None

    @property
    def label(self) -> str:
        """Short human name: the device name, else vendor and id."""
        if self.device_name:
            return self.device_name
        if self.vendor_name:
            return f"{self.vendor_name} device {self.device_id}"
        return f"device {self.vendor_id}:{self.device_id}"

    def to_json(self) -> dict[str, Any]:
        # Shallow, field by field: dataclasses.asdict deep-copies every value, which costs
        # more than the scan itself on a 1,000-function host.
        data = {name: getattr(self, name) for name in _FUNCTION_FIELDS}
        data["class"] = data.pop("class_code")
        data["reset_methods"] = None if self.reset_methods is None else list(self.reset_methods)
        data["virtfns"] = list(self.virtfns)
        data["bridges"] = list(self.bridges)
        data["is_bridge"] = self.is_bridge
        data["kind"] = self.kind
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PciFunction:
        names = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        values["class_code"] = data.get("class")
        return cls(**values)


@dataclass
class IommuGroup:
    id: int
    devices: list[str]
    viable: bool = False
    reasons: list[str] = field(default_factory=list)
    host_critical: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)  # what vfio-pci must take
    bridges: list[str] = field(default_factory=list)  # may stay with the host
    companions: list[str] = field(default_factory=list)  # same physical device, other group

    @property
    def move_together(self) -> list[str]:
        return self.endpoints + self.companions

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in _GROUP_FIELDS}
        for name, value in data.items():
            if isinstance(value, list):
                data[name] = list(value)
        data["move_together"] = self.move_together
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IommuGroup:
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


_FUNCTION_FIELDS = tuple(f.name for f in fields(PciFunction))
_GROUP_FIELDS = tuple(f.name for f in fields(IommuGroup))


@dataclass
class Inventory:
    devices: list[PciFunction]
    groups: list[IommuGroup]
    host_critical: dict[str, list[str]] = field(default_factory=dict)  # address -> reasons
    root: str = "/"

    def __post_init__(self) -> None:
        self._by_address = {function.address: function for function in self.devices}
        self._groups = {group.id: group for group in self.groups}

    def device(self, address: str) -> PciFunction | None:
        return self._by_address.get(address)

    def require(self, address: str) -> PciFunction:
        """The function at ``address``, or :class:`UnknownDevice` saying where it was looked for."""
        function = self._by_address.get(address)
        if function is None:
            raise UnknownDevice(
                f"There is no PCI function {address} on this host.",
                path=f"{self.root.rstrip('/')}/{PCI_DEVICES}",
                hint="Rescan the host and pick the device from the current list; addresses change when cards move.",
            )
        return function

    def group(self, group_id: int | None) -> IommuGroup | None:
        return None if group_id is None else self._groups.get(group_id)

    def group_of(self, address: str) -> IommuGroup | None:
        function = self.device(address)
        return None if function is None else self.group(function.iommu_group)

    @property
    def has_iommu_groups(self) -> bool:
        return bool(self.groups)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "devices": [function.to_json() for function in self.devices],
            "groups": [group.to_json() for group in self.groups],
            "host_critical": self.host_critical,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inventory:
        return cls(
            devices=[PciFunction.from_json(item) for item in data.get("devices", [])],
            groups=[IommuGroup.from_json(item) for item in data.get("groups", [])],
            host_critical=dict(data.get("host_critical") or {}),
            root=data.get("root", "/"),
        )


def scan(tree: HostTree | str | os.PathLike[str]) -> Inventory:
    """Read every PCI function and group of the host at ``tree``. Never raises for odd kernels."""
    from passthrough import isolation  # isolation reads inventories; import here to avoid a cycle

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
    host_critical = isolation.find_host_critical(tree, functions)
    acs_override = "pcie_acs_override=" in (tree.read("proc/cmdline") or "")
    groups = isolation.build_groups(functions, host_critical, acs_override=acs_override)
    return Inventory(devices=functions, groups=groups, host_critical=host_critical, root=tree.root)


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
