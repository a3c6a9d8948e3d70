"""Which ROM files an attach may give a VM: the worker's check against the live host.

A ROM file's bytes go to the guest: QEMU loads the file as the device's option ROM and the
guest can read all of it. The worker runs as root, so a path that came from a web page must
never make it hand over an arbitrary host file (``/etc/shadow``, a key). The paste-ready
configs of :mod:`passthrough.configgen` run nothing and keep accepting any absolute path;
what a job writes into a VM passes :func:`require_rom_file` first.

A ROM must be a regular file of at most :data:`MAX_ROM_BYTES` in one of :data:`ROM_DIRS`,
the directories the hypervisors themselves read firmware from: every one of them is in
libvirt's AppArmor abstraction for QEMU (``abstractions/libvirt-qemu``: ``/usr/share/kvm/**``,
``/usr/share/qemu/**``, ``/usr/share/seabios/**``, ``/usr/share/vgabios/**`` and others for
other architectures), and qemu-server (Proxmox VE) reads ``romfile=`` only from
``/usr/share/kvm``. Only root writes into them. ``/var/lib/libvirt/images`` is left out: it
is a storage pool, holding other VMs' disks and volumes any libvirt user can upload.

The path is checked as written (absolute, no ``..``, no empty or ``.`` part, none of the
characters the generators refuse, literally inside a ROM directory) and as it resolves on
the tree, symlinks followed the way the kernel would with the tree as ``/``: the file it
reaches must be inside a ROM directory too (a ROM directory that is itself a link to
another place is not followed out of the list). So every link on the way lives in a
directory only root can change.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from typing import Any

from passthrough.configgen.safe import UNSAFE, comment_text
from passthrough.host import HostTree
from passthrough.vms.model import VmError

ROM_DIRS = ("/usr/share/vgabios", "/usr/share/kvm", "/usr/share/qemu", "/usr/share/seabios")
PROXMOX_ROM_DIR = "/usr/share/kvm"  # qemu-server passes romfile=/usr/share/kvm/<romfile> to QEMU
MAX_ROM_BYTES = 16 * 1024 * 1024  # an option ROM is at most a few MiB; a 16 MiB one is not a ROM
MAX_PATH = 200  # what a job's message carries (webui.jobs.messages.MAX_TEXT)
MAX_LINKS = 40  # as the kernel's ELOOP limit
QUOTES = ",'\""  # QEMU's option syntax (a comma) and the generators' quoting cannot carry these
HINT = (
    "Copy the VBIOS image into /usr/share/vgabios as root (on Proxmox VE into /usr/share/kvm, the only place "
    "qemu-server reads romfile= from) and name it there, e.g. /usr/share/vgabios/gpu.rom."
)


class RomFileRefused(VmError):
    """A ROM file an attach will not give a VM; the message says why, the hint where to put it."""

    code = "rom_file_refused"


def shown(path: str) -> str:
    """A path for a message: every control or bidirectional character written as a visible escape."""
    return comment_text(path)


def in_rom_dir(path: str, dirs: tuple[str, ...] = ROM_DIRS) -> bool:
    return any(path.startswith(directory + "/") for directory in dirs)


def rom_path_problem(path: Any) -> str | None:
    """What is wrong with how a ROM path is written, or None: the page's check, and the worker's first.

    Said as the end of a sentence starting "ROM file <path> "."""
    if not isinstance(path, str) or not path:
        return "is not a path: name the file by its absolute path on the host"
    if len(path) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    if not path.startswith("/"):
        return "is not an absolute path"
    if UNSAFE.search(path) or any(char in path for char in QUOTES):
        return "holds a comma, a quote or a control character, which QEMU's option syntax cannot carry"
    parts = path.split("/")[1:]
    if ".." in parts:
        return "goes up a directory ('..'): name the file by its own path"
    if "" in parts or "." in parts:
        return "is not written plainly: no '//', no '.' part, no '/' at the end"
    if not in_rom_dir(path):
        return (
            f"is not in a directory the hypervisors read ROMs from ({', '.join(ROM_DIRS)}): the worker runs as root "
            "and the guest can read the whole file, so it gives a VM nothing from anywhere else"
        )
    return None


def parse_rom_file(value: Any) -> str | None:
    """None, or a ROM path written as :func:`rom_path_problem` wants; refuses anything else, saying why."""
    if value is None:
        return None
    problem = rom_path_problem(value)
    if problem is not None:
        text = shown(value) if isinstance(value, str) else repr(value)
        raise RomFileRefused(f"ROM file {text} {problem}.", hint=HINT)
    return str(value)


def require_rom_file(tree: HostTree, value: Any) -> str | None:
    """``value`` when it names a regular file of a sane size that resolves, on ``tree``, inside a ROM directory.

    None stays None. Anything else is :class:`RomFileRefused`, with its own words for each reason."""
    path = parse_rom_file(value)
    if path is None:
        return None
    where = "this host" if tree.is_live else tree.root
    resolved, missing = resolve(tree, path)
    if missing is not None:
        via = "" if resolved == path else f": it leads to {shown(resolved)}"
        gap = "" if missing == resolved else f", and there is nothing at {shown(missing)}"
        raise RomFileRefused(f"ROM file {shown(path)} does not exist on {where}{via}{gap}.", hint=HINT)
    if not in_rom_dir(resolved):
        raise RomFileRefused(
            f"ROM file {shown(path)} is a link to {shown(resolved)}, which is outside the directories the "
            f"hypervisors read ROMs from ({', '.join(ROM_DIRS)}); the guest could read it, so it is refused.",
            path=tree.path(path),
            hint=HINT,
        )
    return _require_regular(tree, path, resolved)


def _require_regular(tree: HostTree, path: str, resolved: str) -> str:
    try:
        info = os.lstat(tree.path(resolved))
    except OSError as error:
        raise RomFileRefused(f"ROM file {shown(path)} cannot be read: {error.strerror}.", path=tree.path(resolved),
                             hint=HINT) from None  # fmt: skip
    if stat.S_ISDIR(info.st_mode):
        raise RomFileRefused(f"ROM file {shown(path)} is a directory, not a ROM image.", path=tree.path(resolved),
                             hint="Name the image inside it, e.g. /usr/share/vgabios/gpu.rom.")  # fmt: skip
    if not stat.S_ISREG(info.st_mode):
        raise RomFileRefused(f"ROM file {shown(path)} is not a regular file (a device, a FIFO or a socket).",
                             path=tree.path(resolved), hint=HINT)  # fmt: skip
    if info.st_size > MAX_ROM_BYTES:
        raise RomFileRefused(
            f"ROM file {shown(path)} is {info.st_size} bytes ({info.st_size / 2**20:.1f} MiB): an option ROM is at "
            f"most a few MiB, and the wizard refuses anything over {MAX_ROM_BYTES // 2**20} MiB.",
            path=tree.path(resolved),
            hint="Check it is the card's VBIOS (a dump is 64 KiB to 2 MiB), not a driver package or a disk image.",
        )
    if info.st_size == 0:
        raise RomFileRefused(f"ROM file {shown(path)} is empty (0 bytes).", path=tree.path(resolved),
                             hint="Dump the card's ROM again, or download its VBIOS.")  # fmt: skip
    return path


def proxmox_rom(path: str) -> str:
    """The file qemu-server hands QEMU for ``romfile=<basename of path>``."""
    return f"{PROXMOX_ROM_DIR}/{posixpath.basename(path)}"


def require_proxmox_rom(tree: HostTree, path: str) -> None:
    """For a Proxmox VM: the file qemu-server will read, when it is there already, passes the same check.

    When it is not there the attach warns (copy the ROM to it before the VM starts)."""
    effective = proxmox_rom(path)
    if effective != path and tree.exists(effective):
        require_rom_file(tree, effective)


def resolve(tree: HostTree, path: str) -> tuple[str, str | None]:
    """``path`` with every symlink followed inside ``tree`` (an absolute link starts again at its root, ``..``
    stops there), and the first path that is not there (None: it all exists)."""
    pending = [part for part in path.split("/") if part]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        here = "/" + "/".join([*done, part])
        try:
            info = os.lstat(tree.path(here))
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                return "/" + "/".join([*done, part, *pending]), here
            raise RomFileRefused(f"ROM file {shown(path)} cannot be read at {shown(here)}: {error.strerror}.",
                                 path=tree.path(here), hint=HINT) from None  # fmt: skip
        if not stat.S_ISLNK(info.st_mode):
            done.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            raise RomFileRefused(f"ROM file {shown(path)} goes through more than {MAX_LINKS} links (a loop?).",
                                 path=tree.path(here), hint=HINT)  # fmt: skip
        target = os.readlink(tree.path(here))
        if target.startswith("/"):
            done = []
        pending = [piece for piece in target.split("/") if piece] + pending
    return "/" + "/".join(done), None
