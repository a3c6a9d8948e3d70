"""Where passed functions land in the guest, and how much MMIO space they need.

The functions of one physical device (``01:00.0`` GPU, ``01:00.1`` its HDMI audio) share
one guest slot, as on the real card: guest drivers look for the audio function beside the
GPU, and NVIDIA's driver checks for it. Function numbers are kept, so ``.1`` stays ``.1``;
a slot must have a function 0 for the guest to scan it, so when function 0 is not passed
the lowest passed function takes its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from passthrough.configgen.spec import Bar, PassedDevice, VmSpec
from passthrough.host import PCI_DEVICES, HostTree, as_tree

if TYPE_CHECKING:
    from passthrough.pci.model import Inventory

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
MIB = 1 << 20

# Flags in a sysfs ``resource`` line (include/linux/ioport.h). IORESOURCE_PREFETCH moved
# from 0x1000 to 0x2000 in Linux 3.x, so prefetch is read from the low bits instead, which
# are the BAR register's own (PCI_BASE_ADDRESS_MEM_PREFETCH, PCI_BASE_ADDRESS_MEM_TYPE_64).
IORESOURCE_MEM = 0x200
IORESOURCE_MEM_64 = 0x100000
BAR_PREFETCH = 0x8
BAR_TYPE_64 = 0x4

# A BAR this large does not fit comfortably below 4 GiB next to the guest's RAM and other
# devices; hypervisors want it mapped in 64-bit MMIO space.
LARGE_BAR = 512 * MIB


@dataclass
class GuestSlot:
    """One guest PCI slot holding the functions of one physical device."""

    index: int  # 0, 1, ... in order of first appearance in the spec
    functions: list[tuple[PassedDevice, int]]  # (device, guest function number)

    @property
    def multifunction(self) -> bool:
        return len(self.functions) > 1

    @property
    def devices(self) -> list[PassedDevice]:
        return [device for device, _ in self.functions]


def guest_slots(spec: VmSpec) -> list[GuestSlot]:
    order: list[tuple[int, ...]] = []
    by_slot: dict[tuple[int, ...], list[PassedDevice]] = {}
    for device in spec.devices:
        key = device.physical_key
        if key not in by_slot:
            order.append(key)
            by_slot[key] = []
        by_slot[key].append(device)
    slots = []
    for index, key in enumerate(order):
        members = sorted(by_slot[key], key=lambda device: device.pci_address.function)
        numbers = [device.pci_address.function for device in members]
        if 0 not in numbers:
            numbers[0] = 0
        slots.append(GuestSlot(index=index, functions=list(zip(members, numbers, strict=True))))
    return slots


def read_bars(tree: HostTree | str, address: str) -> list[Bar]:
    """The memory BARs of ``address`` from ``sys/bus/pci/devices/<address>/resource`` (empty when unreadable).

    The first six lines are BARs 0-5 as ``start end flags`` in hex; the seventh is the
    expansion ROM, which the guest sizes itself, so it is left out.
    """
    text = as_tree(tree).read(f"{PCI_DEVICES}/{address}/resource")
    if not text:
        return []
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


def bars_known(spec: VmSpec) -> bool:
    return all(device.bars for device in spec.devices)


def mmio_64bit_bytes(spec: VmSpec) -> int:
    """Total size of the 64-bit BARs: what must fit in the guest's high MMIO window."""
    return sum(bar.size for device in spec.devices for bar in device.bars if bar.is_64bit)


def mmio_32bit_bytes(spec: VmSpec) -> int:
    return sum(bar.size for device in spec.devices for bar in device.bars if not bar.is_64bit)


def large_bar_bytes(spec: VmSpec) -> int:
    return sum(bar.size for device in spec.devices for bar in device.bars if bar.size >= LARGE_BAR)


def has_large_bar(spec: VmSpec) -> bool:
    return any(bar.size >= LARGE_BAR for device in spec.devices for bar in device.bars)


def next_power_of_two(value: int) -> int:
    power = 1
    while power < value:
        power <<= 1
    return power


def human_size(size: int) -> str:
    if size >= GIB and size % GIB == 0:
        return f"{size // GIB} GiB"
    if size >= MIB:
        return f"{size / MIB:.0f} MiB"
    return f"{size // 1024} KiB"


def device_summary(inventory: Inventory, spec: VmSpec) -> list[str]:
    """One line per passed function: what it is and why it is in the VM.

    Names come from pci.ids and the host; a generator writes these lines only through
    :mod:`passthrough.configgen.safe`.
    """
    lines = []
    for device in spec.devices:
        function = inventory.device(device.address)
        label = function.label if function else "unknown device"
        ids = f" [{function.vendor_id}:{function.device_id}]" if function and function.vendor_id else ""
        why = "picked" if device.picked else f"added: {device.added_because}"
        lines.append(f"{device.address} {label}{ids} ({why})")
    return lines
