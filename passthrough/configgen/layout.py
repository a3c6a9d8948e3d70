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
from passthrough.pci.scan import parse_resource

if TYPE_CHECKING:
    from passthrough.pci.model import Inventory

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

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
    """The memory BARs of ``address`` from ``sys/bus/pci/devices/<address>/resource`` (empty when unreadable)."""
    text = as_tree(tree).read(f"{PCI_DEVICES}/{address}/resource")
    return parse_resource(text) if text else []


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
