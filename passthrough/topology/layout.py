"""The PCIe tree as rows to draw: what each row says, in drawing order.

An indented tree, as ``lspci -tv`` prints it: one row per node, the root complex first,
then each function under its bridge. One row per node keeps a 1,000-function server
readable: the picture grows in height, never in density. The virtual functions of an
SR-IOV device are folded into one row under their physical function (a NIC with 128
VFs is one line, "128 virtual functions", groups 40–167).

Each row carries what the picture shows beside the name: the IOMMU group, the driver
(vfio-pci, a host driver, none), the link (speed and width now against the maximum),
the NUMA node, and for the root ports of a root bus a guess of whether they are the
CPU's own or the chipset's (:mod:`passthrough.topology.attachment`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from passthrough.pci.model import Inventory, PciFunction
from passthrough.topology.attachment import Attachment, attachment

DriverState = Literal["vfio", "host", "none", "mixed"]
_SPEED = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*GT/s")


def short_address(address: str) -> str:
    return address[5:] if address.startswith("0000:") else address


def gts(speed: str | None) -> float | None:
    """``"8.0 GT/s PCIe"`` -> 8.0; None when the text gives no speed."""
    match = _SPEED.match(speed or "")
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class Link:
    """A PCIe link as sysfs reports it: speed and width now, and the most the device can do."""

    speed: str | None  # "8.0 GT/s", without the kernel's trailing "PCIe"
    width: int | None
    max_speed: str | None
    max_width: int | None

    @property
    def below_max(self) -> bool:
        """Slower or narrower than the device's maximum now (an idle GPU often is: it saves power)."""
        now, most = gts(self.speed), gts(self.max_speed)
        slower = now is not None and most is not None and now < most
        narrower = self.width is not None and self.max_width is not None and self.width < self.max_width
        return slower or narrower

    @property
    def text(self) -> str:
        return _link_text(self.speed, self.width)

    @property
    def max_text(self) -> str:
        return _link_text(self.max_speed, self.max_width)


def _link_text(speed: str | None, width: int | None) -> str:
    return " ".join(part for part in (speed or "? GT/s", f"x{width}" if width is not None else "") if part)


def link_of(function: PciFunction) -> Link | None:
    if function.current_link_speed is None and function.current_link_width is None:
        return None
    return Link(
        _plain_speed(function.current_link_speed),
        function.current_link_width,
        _plain_speed(function.max_link_speed),
        function.max_link_width,
    )


def _plain_speed(speed: str | None) -> str | None:
    return speed.removesuffix("PCIe").strip() if speed else None


def driver_state(drivers: list[str | None]) -> DriverState:
    states: set[DriverState] = {
        "none" if not driver else "vfio" if driver == "vfio-pci" else "host" for driver in drivers
    }
    return "mixed" if len(states) > 1 else next(iter(states), "none")


@dataclass
class Row:
    depth: int
    name: str
    kind: str = "device"  # root-complex, bridge, device, vfs
    address: str | None = None
    detail: str = ""  # the class, or what a folded row stands for
    group: int | None = None  # the one IOMMU group of the row, for its color
    badge: str = ""  # what the group badge says: "7", "40–167", "" without a group
    critical: list[str] = field(default_factory=list)  # why the host needs it, if it does
    href: str | None = None
    driver: str | None = None  # what the driver column says
    driver_state: DriverState | None = None
    link: Link | None = None
    numa: int | None = None
    attachment: Attachment | None = None  # on a root port of a root bus: the guess for it
    under: Attachment | None = None  # the guess for the root port this row hangs under, or is

    @property
    def title(self) -> str:
        return f"{short_address(self.address)}  {self.name}" if self.address else self.name


def _function_row(function: PciFunction, inventory: Inventory, link: str | None, depth: int) -> Row:
    driver = function.driver
    return Row(
        depth=depth,
        name=function.label,
        kind="bridge" if function.is_bridge else "device",
        address=function.address,
        detail=function.class_name or "unknown class",
        group=function.iommu_group,
        badge="" if function.iommu_group is None else str(function.iommu_group),
        critical=list(inventory.host_critical.get(function.address, [])),
        href=link.format(address=function.address) if link else None,
        driver=driver or "no driver",
        driver_state=driver_state([driver]),
        link=link_of(function),
        numa=function.numa_node,
    )


def _vfs_row(vfs: list[PciFunction], inventory: Inventory, depth: int) -> Row:
    groups = sorted(vf.iommu_group for vf in vfs if vf.iommu_group is not None)
    drivers = sorted({vf.driver or "no driver" for vf in vfs})
    critical = [
        f"{short_address(vf.address)}: {reason}" for vf in vfs for reason in inventory.host_critical.get(vf.address, [])
    ]
    return Row(
        depth=depth,
        name=f"{len(vfs)} virtual function{'s' if len(vfs) > 1 else ''}",
        kind="vfs",
        detail=f"of {short_address(vfs[0].physfn or '')}, folded into one row",
        group=groups[0] if len(set(groups)) == 1 else None,
        badge=(f"{groups[0]}–{groups[-1]}" if groups[0] != groups[-1] else str(groups[0])) if groups else "",
        critical=critical,
        driver=", ".join(drivers),
        driver_state=driver_state([vf.driver for vf in vfs]),
        numa=vfs[0].numa_node if len({vf.numa_node for vf in vfs}) == 1 else None,
    )


def build_rows(inventory: Inventory, link: str | None = None) -> list[Row]:
    """Rows in drawing order; ``link`` is a URL pattern with ``{address}`` for each function's page."""
    children: dict[str | None, list[PciFunction]] = defaultdict(list)
    vfs: dict[str, list[PciFunction]] = defaultdict(list)
    for function in inventory.devices:
        if function.physfn and inventory.device(function.physfn):
            vfs[function.physfn].append(function)
        else:
            children[function.parent].append(function)

    def subtree(function: PciFunction) -> list[PciFunction]:
        found: list[PciFunction] = []
        for child in children.get(function.address, []):
            found += [child, *vfs.get(child.address, []), *subtree(child)]
        return found

    rows: list[Row] = []

    def visit(function: PciFunction, depth: int, under: Attachment | None) -> None:
        row = _function_row(function, inventory, link, depth)
        if depth == 1 and function.is_bridge:
            row.attachment = under = attachment(function, subtree(function))
        row.under = under
        rows.append(row)
        own_vfs = vfs.get(function.address, [])
        if own_vfs:
            rows.append(_vfs_row(own_vfs, inventory, depth + 1))
            rows[-1].under = under
        for child in children.get(function.address, []):
            visit(child, depth + 1, under)

    roots: dict[str, list[PciFunction]] = defaultdict(list)
    for function in children[None]:
        roots[function.address.rsplit(":", 1)[0]].append(function)
    for domain_bus in sorted(roots, key=lambda key: (len(key), key)):
        rows.append(Row(depth=0, name=f"Root complex {domain_bus}", kind="root-complex", detail="PCI root bus"))
        for function in roots[domain_bus]:
            visit(function, 1, None)
    return rows
