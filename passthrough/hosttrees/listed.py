"""One PCI function as a pasted listing shows it: what the parsers return and the builders read.

:class:`ListedFunction` sits below :mod:`passthrough.hosttrees.listings` (the parsers that
make it) and :mod:`passthrough.hosttrees.listing_hosts` (which turns a list of them into a
host tree's description), so those two import it and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passthrough.pci.address import PciAddress


@dataclass
class ListedFunction:
    """One PCI function as a listing shows it."""

    address: str  # full form, dddd:bb:ss.f
    class_code: str | None = None  # base class and subclass ("0300"): what `lspci -nn` prints
    prog_if: str | None = None  # only `lspci -v` prints it
    class_name: str | None = None
    vendor_id: str | None = None
    device_id: str | None = None
    name: str | None = None  # the vendor and device names lspci printed
    revision: str | None = None
    subsystem_vendor_id: str | None = None
    subsystem_device_id: str | None = None
    driver: str | None = None  # "Kernel driver in use"
    modules: list[str] = field(default_factory=list)  # "Kernel modules"
    iommu_group: int | None = None
    iommu_unit: str | None = None  # dmarN / ivhdN, when the listing walks /sys/class/iommu
    has_reset: bool | None = None  # the "[R]" flag of iommu.sh
    secondary_bus: int | None = None  # a bridge's "Bus: ... secondary=" in `lspci -vvv`
    line: int | None = None  # 1-based line it was read from

    @property
    def pci_address(self) -> PciAddress:
        return PciAddress.parse(self.address)

    @property
    def is_bridge(self) -> bool:
        return self.class_code == "0604"

    @property
    def is_host_bridge(self) -> bool:
        return self.class_code == "0600"

    @property
    def ids(self) -> tuple[str, str] | None:
        return (self.vendor_id, self.device_id) if self.vendor_id and self.device_id else None
