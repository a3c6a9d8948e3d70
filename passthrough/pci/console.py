"""Which console and framebuffers sit on which PCI function: the one reader of console state.

Two questions need the same facts. The host-critical verdict
(:func:`passthrough.pci.hostcritical.console_on`) asks whether the host's only screen is on
the boot VGA device; a bind (:func:`passthrough.ops.console.holders_of`) asks what it must
release before vfio-pci can take a GPU. Both read them here, through :func:`read_console`,
and only word or act on them.

A framebuffer is on a function when its ``device`` is that function (the function's
driver draws it), or when it is the firmware's (efifb, vesafb, simplefb/simpledrm), which
draws on the boot VGA device. fbcon draws the framebuffer consoles on the framebuffers
``fbcon=map:`` names (fb0 by default); the VGA text console is always on the boot VGA device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from passthrough.host import HostTree
from passthrough.pci.address import function_of

FIRMWARE_FRAMEBUFFERS = ("EFI VGA", "VESA VGA", "simple", "simplefb", "simpledrmdrmfb", "simpledrm", "BOCHS", "efifb")
FIRMWARE_FB_DEVICES = ("efi-framebuffer", "vesa-framebuffer", "simple-framebuffer", "simple-framebuffer.0")
PLATFORM = "sys/devices/platform/"
_FRAMEBUFFER = re.compile(r"fb[0-9]+")


@dataclass(frozen=True)
class Framebuffer:
    name: str  # fb0
    label: str  # what it calls itself ("EFI VGA", "nouveaudrmfb"); "?" when unreadable
    native: bool  # its device is the function (its driver draws it); else the firmware's


@dataclass(frozen=True)
class VtConsole:
    name: str  # vtcon1
    vga_text: bool  # the VGA text console; else a framebuffer console fbcon draws on the function


@dataclass(frozen=True)
class ConsoleOn:
    """What of the host's console sits on one function, in the kernel's order."""

    address: str
    framebuffers: list[Framebuffer] = field(default_factory=list)  # its driver's, and the firmware's
    simpledrm_cards: list[str] = field(default_factory=list)  # DRM cards on a simple-framebuffer
    consoles: list[VtConsole] = field(default_factory=list)  # bound: VGA text, and fbcon's on this function
    fbcon: dict[str, list[str]] = field(default_factory=dict)  # framebuffer console -> its framebuffers here
    # Platform framebuffer devices (efi-framebuffer.0) and the driver holding each.
    firmware_devices: list[tuple[str, str]] = field(default_factory=list)

    @property
    def vga_text(self) -> list[str]:
        return [console.name for console in self.consoles if console.vga_text]


def read_console(tree: HostTree, address: str) -> ConsoleOn:
    """Which framebuffers and consoles sit on function ``address``.

    The firmware's framebuffers, the VGA text console and the platform framebuffer devices
    are listed whatever ``address`` is: they are on the boot VGA device, and only the caller
    knows whether that is the function it asks about.
    """
    screens = []
    for fb in framebuffers(tree):
        label = tree.read(f"sys/class/graphics/{fb}/name") or "?"
        if function_of(tree, f"sys/class/graphics/{fb}/device") == address:
            screens.append(Framebuffer(fb, label, native=True))
        elif _is_firmware_framebuffer(tree, fb):
            screens.append(Framebuffer(fb, label, native=False))
    cards = []
    for card in sorted(tree.listdir("sys/class/drm")):
        if not card.startswith("card") or "-" in card:
            continue
        target = tree.realpath(f"sys/class/drm/{card}/device") if tree.exists(f"sys/class/drm/{card}/device") else ""
        if "simple-framebuffer" in target:
            cards.append(card)

    fbcon = framebuffer_consoles_on(tree, address)
    consoles = []
    for vtcon in sorted(tree.listdir("sys/class/vtconsole")):
        name = tree.read(f"sys/class/vtconsole/{vtcon}/name") or ""
        if tree.read(f"sys/class/vtconsole/{vtcon}/bind") != "1":
            continue
        if "VGA" in name:
            consoles.append(VtConsole(vtcon, vga_text=True))
        elif vtcon in fbcon:
            consoles.append(VtConsole(vtcon, vga_text=False))
    devices = []
    for device in _firmware_framebuffer_devices(tree):
        driver = tree.link_name(f"{PLATFORM}{device}/driver")
        if driver is not None:
            devices.append((device, driver))
    return ConsoleOn(address, screens, cards, consoles, fbcon, devices)


def framebuffers(tree: HostTree) -> list[str]:
    """The registered framebuffers (``fb0``, ``fb1``...), in the kernel's order."""
    numbers = [int(entry[2:]) for entry in tree.listdir("sys/class/graphics") if _FRAMEBUFFER.fullmatch(entry)]
    return [f"fb{number}" for number in sorted(numbers)]


def fbcon_framebuffers(tree: HostTree) -> list[str]:
    """The framebuffers fbcon draws the consoles on.

    fbcon puts every console on fb0 unless ``fbcon=map:`` on the kernel command line maps
    them elsewhere (a digit per console, repeated); a console whose framebuffer is not
    registered is on the first one that is. sysfs does not show a map changed at run time
    (``con2fbmap``), so that is not seen here.
    """
    registered = framebuffers(tree)
    if not registered:
        return []
    wanted = [f"fb{digit}" for digit in _fbcon_map(tree)]
    return list(dict.fromkeys(fb if fb in registered else registered[0] for fb in wanted))


def _fbcon_map(tree: HostTree) -> str:
    for word in (tree.read("proc/cmdline") or "").split():
        if word.startswith("fbcon="):
            for option in word[len("fbcon=") :].split(","):
                digits = option[len("map:") :]
                if option.startswith("map:") and digits and all(char in "0123456789" for char in digits):
                    return digits
    return "0"


def framebuffer_consoles_on(tree: HostTree, address: str) -> dict[str, list[str]]:
    """The bound framebuffer consoles (``vtconN``) fbcon draws on function ``address``, each with its framebuffers.

    A framebuffer is on a function when its ``device`` is that function, or when it is the
    firmware's (efifb, vesafb, simpledrm) and the function is the boot VGA device.
    """
    consoles = [
        vtcon
        for vtcon in sorted(tree.listdir("sys/class/vtconsole"))
        if tree.read(f"sys/class/vtconsole/{vtcon}/bind") == "1"
        and "frame buffer" in (tree.read(f"sys/class/vtconsole/{vtcon}/name") or "")
    ]
    if not consoles:
        return {}
    boot_vga = tree.read(f"sys/bus/pci/devices/{address}/boot_vga") == "1"
    drawn = [
        fb
        for fb in fbcon_framebuffers(tree)
        if function_of(tree, f"sys/class/graphics/{fb}/device") == address
        or (boot_vga and _is_firmware_framebuffer(tree, fb))
    ]
    return {vtcon: drawn for vtcon in consoles} if drawn else {}


def _is_firmware_framebuffer(tree: HostTree, fb: str) -> bool:
    name = tree.read(f"sys/class/graphics/{fb}/name") or ""
    device = f"sys/class/graphics/{fb}/device"
    path = tree.realpath(device) if tree.exists(device) else ""
    return name in FIRMWARE_FRAMEBUFFERS or any(part in path for part in FIRMWARE_FB_DEVICES)


def _firmware_framebuffer_devices(tree: HostTree) -> list[str]:
    """Platform framebuffer devices (efi-framebuffer.0, simple-framebuffer.0) with a framebuffer or DRM card."""
    devices = []
    for class_dir in ("graphics", "drm"):
        for entry in sorted(tree.listdir(f"sys/class/{class_dir}")):
            if not tree.exists(f"sys/class/{class_dir}/{entry}/device"):
                continue
            device = tree.realpath(f"sys/class/{class_dir}/{entry}/device")
            if device.startswith(PLATFORM):
                devices.append(device[len(PLATFORM) :].split("/", 1)[0])
    return list(dict.fromkeys(devices))
