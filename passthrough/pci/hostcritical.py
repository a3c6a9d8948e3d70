"""Host-critical functions: the ones whose loss strands the host.

* the boot VGA device while a console or firmware framebuffer (efifb, vesafb, simpledrm,
  a bound vtconsole) sits on it: unbinding it blanks the only screen the host has;
* the controller behind the mounted root filesystem (through partitions, device-mapper
  and md layers);
* the NIC that carries the default route (through bridges such as Proxmox's ``vmbr0``,
  bonds and VLANs), usually the path to this web UI.

Each finding carries the evidence in words, so the UI can say *why*. What sits on the
boot VGA device is read by :mod:`passthrough.pci.console`, the reader a bind uses too.
"""

from __future__ import annotations

from passthrough.host import HostTree
from passthrough.pci.address import function_of
from passthrough.pci.console import read_console
from passthrough.pci.model import PciFunction


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


# Console -----------------------------------------------------------------------------
def console_on(tree: HostTree, address: str) -> list[str]:
    """Why the host's console depends on the boot VGA device at ``address`` (empty: it does not)."""
    on = read_console(tree, address)
    screens = [
        f"its driver draws framebuffer {fb.name} ({fb.label})"
        if fb.native
        else f"the firmware framebuffer {fb.name} ({fb.label}) shows the boot screen on it"
        for fb in on.framebuffers
    ]
    screens += [f"simpledrm ({card}) shows the boot screen on it" for card in on.simpledrm_cards]
    consoles = [
        f"the VGA text console ({console.name}) is on it"
        if console.vga_text
        else f"the framebuffer console ({console.name}) is bound"
        for console in on.consoles
    ]
    if not screens:
        # A text console on VGA needs no framebuffer.
        return [reason for reason in consoles if "VGA text" in reason]
    return screens + consoles


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
        address = function_of(tree, f"sys/class/block/{disk}")
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
            address = function_of(tree, f"sys/class/net/{name}/device")
            if address:
                found.append((address, f"it carries the default route ({' → '.join(chain)})"))
                continue
            pending.extend((lower, chain + [lower]) for lower in _lower_interfaces(tree, name))
    return found
