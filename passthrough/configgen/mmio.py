"""The guest's 64-bit MMIO window, for the Linux targets: when the defaults are too small, and how large to make it.

The guest firmware maps every 64-bit BAR into one window above 4 GiB. OVMF makes that
window 32 GiB unless told otherwise through the fw_cfg file ``opt/ovmf/X-PciMmio64Mb``
(newer builds size it from the guest's physical address width), and QEMU's q35 host
bridge reserves 32 GiB for it (``pci-hole64-size``; i440fx 2 GiB). A GPU with Resizable
BAR on maps all its VRAM at once (a 16 GiB BAR for a 16 GB card), a compute card 64 GiB:
one such BAR, or BARs that together pass the default, leave the guest unable to place
them ("BAR 0: no space", Code 12 in Windows, a card missing in ``lspci``).

:func:`window` decides from the BAR sizes the scan read; :func:`unknown_note` says what
to add by hand when the sizes were not read. QEMU, libvirt and Proxmox each write the
result in their own words (``qemu.py``, ``libvirt.py``, ``proxmox.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from passthrough.configgen.layout import GIB, KIB, MIB, human_size, next_power_of_two
from passthrough.configgen.spec import VmSpec

if TYPE_CHECKING:
    from passthrough.pci.model import Inventory

DEFAULT_WINDOW = 32 * GIB  # OVMF's 64-bit aperture and q35's pci-hole64-size, unless set
RESIZABLE_BAR = 4 * GIB  # a BAR above this is a Resizable-BAR GPU's VRAM or a compute card's memory
MIN_WINDOW = 64 * GIB
HOST_BRIDGES = {"q35": "q35-pcihost", "i440fx": "i440FX-pcihost"}  # QEMU's device names
OVMF_FW_CFG = "opt/ovmf/X-PciMmio64Mb"
# Classes whose BARs can be huge: display (03), processing accelerators (12), co-processors (0b40).
LARGE_BAR_CLASSES = ("03", "12", "0b40")


@dataclass(frozen=True)
class MmioWindow:
    size: int  # bytes, a power of two of at least MIN_WINDOW
    why: str

    @property
    def mib(self) -> int:
        return self.size // MIB

    @property
    def kib(self) -> int:
        return self.size // KIB

    @property
    def qemu_size(self) -> str:
        return f"{self.size // GIB}G"


def window(spec: VmSpec) -> MmioWindow | None:
    """The window the passed devices need, or None when the defaults hold them (or sizes are unknown).

    BARs are powers of two, each aligned to its size, so the next power of two of their total
    packs them; twice that leaves room for the emulated devices' BARs and the root ports'
    hot-plug reservations, and it is never less than 64 GiB.
    """
    bars = [bar for device in spec.devices for bar in device.bars if bar.is_64bit]
    if not bars:
        return None
    total = sum(bar.size for bar in bars)
    largest = max(bars, key=lambda bar: bar.size)
    needed = 2 * next_power_of_two(total)
    if largest.size <= RESIZABLE_BAR and needed <= DEFAULT_WINDOW:
        return None
    size = max(MIN_WINDOW, needed)
    owner = next(device for device in spec.devices if largest in device.bars)
    reasons = []
    if largest.size > RESIZABLE_BAR:
        reasons.append(
            f"BAR {largest.index} of {owner.address} is {human_size(largest.size)} (Resizable BAR on, or a compute "
            "card's memory)"
        )
    if needed > DEFAULT_WINDOW:
        reasons.append(f"the passed devices' 64-bit BARs add up to {human_size(total)}")
    why = (
        " and ".join(reasons) + f"; the guest's default 64-bit window is {human_size(DEFAULT_WINDOW)}, so it is set to "
        f"{human_size(size)} (twice the next power of two of {human_size(total)}, at least {human_size(MIN_WINDOW)}): "
        "room for the BARs at their natural alignment and for the emulated devices. A window this high also needs "
        "the guest's physical address width to reach it (QEMU's default of 40 bits covers 1 TiB)."
    )
    return MmioWindow(size, why)


def unknown_note(inventory: Inventory, spec: VmSpec) -> str | None:
    """What to add by hand when a GPU's or accelerator's BAR sizes were not read."""
    unread = []
    for device in spec.devices:
        function = inventory.device(device.address)
        code = (function.class_code or "") if function else ""
        if not device.bars and code.startswith(LARGE_BAR_CLASSES):
            unread.append(device.address)
    if not unread:
        return None
    return (
        f"The BAR sizes of {', '.join(unread)} were not read, so no 64-bit MMIO window is set. If `lspci -vv` shows "
        f"a BAR over 4 GiB (Resizable BAR on) or more than {human_size(DEFAULT_WINDOW)} of them together, give the "
        f"guest a larger window: QEMU's pci-hole64-size on the host bridge and, under OVMF, {OVMF_FW_CFG} "
        "(65536 for one 16 GiB card)."
    )
