"""Host-critical functions: the ones whose loss strands the host.

* the boot VGA device while a console or firmware framebuffer (efifb, vesafb, simpledrm,
  a bound vtconsole) sits on it: unbinding it blanks the only screen the host has;
* the controller behind the mounted root filesystem (through partitions, device-mapper
  and md layers);
* the NIC that carries the default route (through bridges such as Proxmox's ``vmbr0``,
  bonds and VLANs), usually the path to this web UI.

Each finding carries the evidence in words, so the UI can say *why*.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from passthrough.address import is_address
from passthrough.host import HostTree

if TYPE_CHECKING:
    from passthrough.inventory import PciFunction

FIRMWARE_FRAMEBUFFERS = ("EFI VGA", "VESA VGA", "simple", "simplefb", "simpledrmdrmfb", "simpledrm", "BOCHS", "efifb")
FIRMWARE_FB_DEVICES = ("efi-framebuffer", "vesa-framebuffer", "simple-framebuffer", "simple-framebuffer.0")
_FRAMEBUFFER = re.compile(r"fb[0-9]+")


def find_host_critical(tree: HostTree, functions: list[PciFunction]) -> dict[str, list[str]]:
    critical: dict[str, list[str]] = {}
    known = {function.address for function in functions}

    def mark(address: str | None, reason: str) -> None:
        if address in known:
            critical.setdefault(address, [])
            if reason not in critical[address]:
                critical[address].append(reason)

    for function in functions:
        if function.boot_vga:
            for reason in console_on(tree, function.address):
                mark(function.address, reason)
    for address, reason in root_filesystem_controllers(tree):
        mark(address, reason)
    for address, reason in default_route_nics(tree):
        mark(address, reason)
    return critical


def _pci_of(tree: HostTree, relative: str) -> str | None:
    """Deepest PCI function on the resolved path of a sysfs entry, or None."""
    if not tree.exists(relative):
        return None
    parts = [part for part in tree.realpath(relative).split("/") if is_address(part)]
    return parts[-1] if parts else None


# Console -----------------------------------------------------------------------------
def console_on(tree: HostTree, address: str) -> list[str]:
    """Why the host's console depends on the boot VGA device at ``address`` (empty: it does not)."""
    screens = []
    for fb in framebuffers(tree):
        name = tree.read(f"sys/class/graphics/{fb}/name") or "?"
        if _pci_of(tree, f"sys/class/graphics/{fb}/device") == address:
            screens.append(f"its driver draws framebuffer {fb} ({name})")
        elif _is_firmware_framebuffer(tree, fb):
            screens.append(f"the firmware framebuffer {fb} ({name}) shows the boot screen on it")
    for card in sorted(tree.listdir("sys/class/drm")):
        if not card.startswith("card") or "-" in card:
            continue
        target = tree.realpath(f"sys/class/drm/{card}/device") if tree.exists(f"sys/class/drm/{card}/device") else ""
        if "simple-framebuffer" in target:
            screens.append(f"simpledrm ({card}) shows the boot screen on it")

    consoles = []
    on_it = framebuffer_consoles_on(tree, address)
    for vtcon in sorted(tree.listdir("sys/class/vtconsole")):
        name = tree.read(f"sys/class/vtconsole/{vtcon}/name") or ""
        if tree.read(f"sys/class/vtconsole/{vtcon}/bind") != "1":
            continue
        if "VGA" in name:
            consoles.append(f"the VGA text console ({vtcon}) is on it")
        elif vtcon in on_it:
            consoles.append(f"the framebuffer console ({vtcon}) is bound")
    if not screens:
        # A text console on VGA needs no framebuffer.
        return [reason for reason in consoles if "VGA text" in reason]
    return screens + consoles


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
        if _pci_of(tree, f"sys/class/graphics/{fb}/device") == address
        or (boot_vga and _is_firmware_framebuffer(tree, fb))
    ]
    return {vtcon: drawn for vtcon in consoles} if drawn else {}


def _is_firmware_framebuffer(tree: HostTree, fb: str) -> bool:
    name = tree.read(f"sys/class/graphics/{fb}/name") or ""
    device = f"sys/class/graphics/{fb}/device"
    path = tree.realpath(device) if tree.exists(device) else ""
    return name in FIRMWARE_FRAMEBUFFERS or any(part in path for part in FIRMWARE_FB_DEVICES)


# Root filesystem ----------------------------------------------------------------------
def _root_mount(tree: HostTree) -> tuple[str | None, str | None, str | None]:
    """(major:minor, source, fstype) of the mount on ``/``."""
    found: tuple[str | None, str | None, str | None] = (None, None, None)
    # The last mount on "/" wins: it is the one on top. mountinfo also gives major:minor,
    # which still resolves when the source reads "/dev/root".
    mountinfo = tree.read("proc/self/mountinfo") or tree.read("proc/1/mountinfo")
    for line in (mountinfo or "").splitlines():
        fields = line.split()
        if len(fields) >= 10 and fields[4] == "/" and "-" in fields:
            tail = fields[fields.index("-") + 1 :]
            found = (fields[2], tail[1] if len(tail) > 1 else None, tail[0] if tail else None)
    if found[0]:
        return found
    for line in (tree.read("proc/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "/" and fields[0] != "rootfs":
            found = (None, fields[0], fields[2])
    return found


def _block_name(tree: HostTree, majmin: str | None, source: str | None) -> str | None:
    if majmin and tree.exists(f"sys/dev/block/{majmin}"):
        return tree.realpath(f"sys/dev/block/{majmin}").rsplit("/", 1)[-1]
    if source and source.startswith("/dev/"):
        name = source[5:]
        if name.startswith("mapper/"):
            wanted = name[7:]
            for block in tree.listdir("sys/block"):
                if tree.read(f"sys/block/{block}/dm/name") == wanted:
                    return block
        name = name.replace("/", "!")
        if tree.exists(f"sys/class/block/{name}"):
            return name
    return None


def _physical_blocks(tree: HostTree, name: str, seen: set[str] | None = None) -> list[str]:
    """The disks under ``name``: a partition's disk, a dm or md device's slaves, recursively."""
    seen = set() if seen is None else seen
    if name in seen:
        return []
    seen.add(name)
    base = f"sys/class/block/{name}"
    if tree.exists(f"{base}/partition"):
        parent = tree.realpath(base).rsplit("/", 2)[-2]
        return _physical_blocks(tree, parent, seen)
    slaves = tree.listdir(f"{base}/slaves")
    if slaves:
        found = []
        for slave in sorted(slaves):
            found.extend(_physical_blocks(tree, slave, seen))
        return found
    return [name]


def root_filesystem_controllers(tree: HostTree) -> list[tuple[str, str]]:
    majmin, source, fstype = _root_mount(tree)
    name = _block_name(tree, majmin, source)
    if not name:
        return []
    found = []
    for disk in _physical_blocks(tree, name):
        address = _pci_of(tree, f"sys/class/block/{disk}")
        if address:
            via = f" through {name}" if name != disk else ""
            found.append(
                (address, f"the root filesystem ({source or name}, {fstype or 'unknown type'}) is on /dev/{disk}{via}")
            )
    return found


# Default route ------------------------------------------------------------------------
def _default_route_interfaces(tree: HostTree) -> list[str]:
    interfaces = []
    for line in (tree.read("proc/net/route") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            interfaces.append(fields[0])
    for line in (tree.read("proc/net/ipv6_route") or "").splitlines():
        fields = line.split()
        if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
            interfaces.append(fields[9])
    return list(dict.fromkeys(interfaces))


def _lower_interfaces(tree: HostTree, interface: str) -> list[str]:
    base = f"sys/class/net/{interface}"
    lower = [entry[6:] for entry in tree.listdir(base) if entry.startswith("lower_")]
    lower += tree.listdir(f"{base}/brif")
    lower += (tree.read(f"{base}/bonding/slaves") or "").split()
    return sorted(set(lower))


def default_route_nics(tree: HostTree) -> list[tuple[str, str]]:
    found = []
    for interface in _default_route_interfaces(tree):
        pending, seen = [(interface, [interface])], set()
        while pending:
            name, chain = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            address = _pci_of(tree, f"sys/class/net/{name}/device")
            if address:
                found.append((address, f"it carries the default route ({' → '.join(chain)})"))
                continue
            pending.extend((lower, chain + [lower]) for lower in _lower_interfaces(tree, name))
    return found
