"""The plain data of a host's PCI functions: :class:`PciFunction`, :class:`IommuGroup`, :class:`Inventory`.

The bottom of :mod:`passthrough.pci`: no reading and no judging here, only the types
every other module passes around and their stable JSON contract (``to_json``/``from_json``,
documented in the README). A fact the kernel does not expose is ``None``, never guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from passthrough.errors import UnknownDevice
from passthrough.host import PCI_DEVICES
from passthrough.pci.address import PciAddress

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


@dataclass(frozen=True)
class Bar:
    """One memory BAR of a function, from its sysfs ``resource`` file."""

    index: int
    size: int  # bytes
    is_64bit: bool
    prefetchable: bool


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
    bars: list[Bar] | None = None  # memory BARs from ``resource``; None: not read
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
        data["bars"] = None if self.bars is None else [asdict(bar) for bar in self.bars]
        data["is_bridge"] = self.is_bridge
        data["kind"] = self.kind
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PciFunction:
        names = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        values["class_code"] = data.get("class")
        if values.get("bars") is not None:
            values["bars"] = [Bar(**bar) for bar in values["bars"]]
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
    # NUMA node -> its CPUs as the kernel lists them ("0-7,16-23"), nodes without CPUs left out; empty: not read.
    numa_nodes: dict[int, str] = field(default_factory=dict)

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
            "numa_nodes": [{"node": node, "cpulist": cpus} for node, cpus in sorted(self.numa_nodes.items())],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inventory:
        return cls(
            devices=[PciFunction.from_json(item) for item in data.get("devices", [])],
            groups=[IommuGroup.from_json(item) for item in data.get("groups", [])],
            host_critical=dict(data.get("host_critical") or {}),
            root=data.get("root", "/"),
            numa_nodes={int(item["node"]): str(item["cpulist"]) for item in data.get("numa_nodes") or []},
        )
