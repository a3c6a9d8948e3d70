"""Record a host into a directory tree that ``--root`` reads back.

``capture(HostTree("/"), dest)`` lets a user attach their host to a bug report: every
command (inventory, readiness, vmconfig) then runs on ``dest`` as it ran on the host.
The tree follows the layout of DESIGN.md. What it records, and why so little:

* PCI functions at their real paths under ``sys/devices`` (so bridges keep their place),
  their readable top-level attributes, ``config`` and the links the kernel gives them;
  drivers, IOMMU groups and IOMMU units so those links resolve;
* the sysfs entries the host-critical checks walk (net, block, drm, graphics,
  vtconsole), the proc files and host files readiness reads, and the kernel log.

Never read: BAR files (``resourceN``: reading one touches device memory), ROMs, VPD (it
can block for seconds and holds serial numbers), efivar contents, anything outside the
lists below. Symlinks stay relative, so the tree can be moved. The tree is written into
a temporary sibling of ``dest`` and renamed at the end: a failed capture leaves nothing.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from passthrough.address import is_address
from passthrough.errors import NotAHostTree, PassthroughError
from passthrough.host import IOMMU_CLASS, IOMMU_GROUPS, PCI_DEVICES, PCI_DRIVERS, HostTree

ATTRIBUTE_LIMIT = 64 * 1024
CONFIG_LIMIT = 4096  # the whole extended config space; the kernel gives 64 bytes to non-root readers
PROC_LIMIT = 16 * 1024 * 1024  # /proc/interrupts of a 256-CPU host runs past a megabyte
HOST_FILE_LIMIT = 1024 * 1024

# A function's links that say what it is bound to and where it sits.
FUNCTION_LINKS = ("driver", "iommu_group", "iommu", "physfn", "subsystem", "firmware_node")
BAR_FILE = re.compile(r"resource\d+(_wc)?$")
# vpd can block for seconds and holds serial numbers; amdgpu's pcie_bw sleeps a second per
# read, and its serial_number and unique_id identify the card without helping a bug report.
NEVER_READ = ("rom", "vpd", "pcie_bw", "serial_number", "unique_id")
# Write-only attributes whose presence is a fact (``reset`` says a function can be reset).
PRESENCE_ONLY = ("reset", "driver_override")
DRIVER_CONTROLS = ("bind", "unbind", "new_id", "remove_id")

# What readiness and the host-critical checks read besides sys/ (see the shared layout).
# fmt: off
PROC_FILES = (
    "proc/cpuinfo", "proc/cmdline", "proc/modules", "proc/interrupts", "proc/sys/kernel/osrelease", "proc/mounts",
    "proc/self/mountinfo", "proc/net/route", "proc/net/ipv6_route",
    "proc/sys/kernel/hostname",  # already in capture.json; kept so a capture of a capture knows its name
)
HOST_FILES = (
    "etc/default/grub", "etc/default/grub.d/*.cfg", "etc/kernel/cmdline", "etc/kernel/proxmox-boot-uuids",
    "etc/os-release", "usr/lib/os-release", "etc/modprobe.d/*.conf", "etc/modules", "etc/modules-load.d/*.conf",
    "etc/initramfs-tools/modules", "etc/initramfs-tools/initramfs.conf", "etc/dracut.conf", "etc/dracut.conf.d/*.conf",
    "etc/mkinitcpio.conf", "etc/udev/rules.d/*.rules", "boot/grub/grub.cfg", "boot/grub2/grub.cfg",
    "boot/efi/EFI/*/grub.cfg", "boot/loader/loader.conf", "boot/loader/entries/*.conf", "boot/efi/loader/loader.conf",
    "boot/efi/loader/entries/*.conf", "efi/loader/loader.conf", "efi/loader/entries/*.conf", "boot/refind_linux.conf",
    "boot/syslinux/syslinux.cfg", "boot/extlinux/extlinux.conf", "boot/syslinux/extlinux.conf", "boot/syslinux.cfg",
    "boot/extlinux.conf",
)
# Recorded as empty files: their presence says the tool is installed.
TOOL_MARKERS = (
    "usr/sbin/update-initramfs", "usr/bin/dracut", "usr/bin/mkinitcpio", "usr/sbin/update-grub",
    "usr/sbin/grub-mkconfig", "usr/sbin/grub2-mkconfig", "usr/bin/bootctl", "usr/sbin/proxmox-boot-tool",
    "usr/bin/kernel-install",
)
# fmt: on
MODULE_PREFIXES = ("vfio", "kvm")
NEVER_RECORDED = (
    "BAR files (resourceN), expansion ROMs, VPD, pcie_bw, serial_number and unique_id of PCI functions; "
    "efivar contents (names only); "
    "write-only attributes other than reset and driver_override (recorded empty); "
    "anything outside the lists in passthrough/capture.py"
)

Progress = Callable[[str], None]


@dataclass
class SkippedPath:
    path: str
    reason: str


@dataclass
class CaptureSummary:
    dest: str
    source: str
    captured_at: str
    hostname: str | None = None
    kernel: str | None = None
    tool_version: str | None = None
    privileged: bool = False  # ran as root: full config space, /boot/efi and dmesg were readable
    functions: int = 0
    groups: int = 0
    files: int = 0
    links: int = 0
    skipped: list[SkippedPath] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(SkippedPath(path, reason))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = "passthrough-wizard host tree"
        data["tool"] = "passthrough-wizard"
        data["never_recorded"] = NEVER_RECORDED
        return data


def capture(source: HostTree, dest: str | os.PathLike[str], *, progress: Progress | None = None) -> CaptureSummary:
    """Record ``source`` into ``dest`` (missing or empty) and return what was recorded.

    ``progress`` receives one line per stage. Raises :class:`PassthroughError` for a bad
    destination and :class:`NotAHostTree` for a source without sys/ or proc/cpuinfo.
    """
    started = time.monotonic()
    target = _check_destination(Path(dest))
    if not (source.is_dir("sys") or source.is_file("proc/cpuinfo")):
        raise NotAHostTree(
            f"{source.root} is not a host tree: it has neither sys/ nor proc/cpuinfo.",
            hint="Capture / (this host) or a directory made by `manage.py capture`.",
        )
    summary = CaptureSummary(
        dest=str(target),
        source=source.root,
        captured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        hostname=source.read("proc/sys/kernel/hostname"),
        kernel=source.read("proc/sys/kernel/osrelease"),
        tool_version=_tool_version(),
        privileged=os.geteuid() == 0,
    )
    try:
        staging = tempfile.mkdtemp(prefix=f".{target.name}.capture-", dir=target.parent)
    except OSError as error:
        raise PassthroughError(
            f"Cannot create the capture next to {target}: {error.strerror}.",
            path=str(target.parent),
            hint="Choose a destination in a directory you can write to.",
        ) from error
    try:
        _Recorder(source, staging, summary).record_all(progress or (lambda line: None))
        summary.seconds = round(time.monotonic() - started, 3)
        with open(f"{staging}/capture.json", "w") as handle:
            json.dump(summary.to_json(), handle, indent=2)
            handle.write("\n")
        os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the tree is meant to be shared
        # rename(2) replaces an empty directory, so an empty dest is taken over atomically.
        os.rename(staging, target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise PassthroughError(
            f"The capture into {target} failed and nothing was written: {error}.",
            path=str(target),
            hint="Check that the destination is still empty and the disk has room, then run it again.",
        ) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _check_destination(dest: Path) -> Path:
    target = dest.absolute()
    hint = "Give capture a new directory name, or an empty directory."
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise PassthroughError(f"{target} exists and is not a directory.", path=str(target), hint=hint)
    if target.is_dir():
        entries = sorted(os.listdir(target))
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise PassthroughError(
                f"{target} is not empty ({len(entries)} {'entry' if len(entries) == 1 else 'entries'}: {shown}); "
                "a capture never mixes with other files.",
                path=str(target),
                hint=hint,
            )
    elif not target.parent.is_dir():
        raise PassthroughError(
            f"The directory {target.parent} does not exist.", path=str(target.parent), hint="Create it first."
        )
    return target


def _tool_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("passthrough-wizard")
    except metadata.PackageNotFoundError:
        pass
    # A source checkout (how the app is run) is not installed: read its pyproject.toml.
    import tomllib

    try:
        with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as handle:
            return tomllib.load(handle)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None


def _read_capped(path: str, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes and whether there was more. O_NONBLOCK keeps a FIFO from hanging us."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(65536, limit - size))
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), bool(os.read(fd, 1))
    finally:
        os.close(fd)


class _Recorder:
    """Copies the chosen parts of ``source`` into ``staging``, at the same relative paths."""

    def __init__(self, source: HostTree, staging: str, summary: CaptureSummary) -> None:
        self.source = source
        self.staging = staging
        self.summary = summary
        self.source_root = os.path.realpath(source.root)
        self.recorded: set[str] = set()  # real directories already recorded as nodes

    # Primitives ---------------------------------------------------------------------
    def _src(self, rel: str) -> str:
        return self.source.path(rel)

    def _dst(self, rel: str) -> str:
        return f"{self.staging}/{rel}"

    def resolve(self, rel: str) -> str | None:
        """Real path of ``rel`` relative to the source root; None when it leads outside."""
        real = os.path.realpath(self._src(rel))
        if self.source_root == "/":
            return real.lstrip("/")
        if real == self.source_root:
            return ""
        if real.startswith(self.source_root + "/"):
            return real[len(self.source_root) + 1 :]
        return None

    def ensure_dir(self, rel: str) -> None:
        if rel:
            os.makedirs(self._dst(rel), exist_ok=True)

    def write(self, rel: str, data: bytes) -> None:
        path = self._dst(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        self.summary.files += 1

    def placeholder(self, rel: str) -> None:
        if not os.path.lexists(self._dst(rel)):
            self.write(rel, b"")

    def copy_file(self, rel: str, limit: int, *, source_rel: str | None = None) -> bool:
        try:
            data, truncated = _read_capped(self._src(source_rel or rel), limit)
        except OSError as error:
            self.summary.skip(rel, f"unreadable: {error.strerror or error}")
            return False
        if truncated:
            self.summary.skip(rel, f"truncated to its first {limit} bytes")
        self.write(rel, data)
        return True

    def copy_link(self, rel: str) -> str | None:
        """Record the symlink ``rel`` at its real place; return its real target (None: not recorded)."""
        parent = self.resolve(os.path.dirname(rel))
        if parent is None:
            self.summary.skip(rel, "its directory lies outside the captured host")
            return None
        real_rel = f"{parent}/{os.path.basename(rel)}" if parent else os.path.basename(rel)
        try:
            text = os.readlink(self._src(real_rel))
        except OSError as error:
            self.summary.skip(rel, f"unreadable link: {error.strerror or error}")
            return None
        target = self.resolve(real_rel)
        if target is None:
            self.summary.skip(rel, f"links outside the captured host ({text})")
            return None
        # Keep the kernel's own relative text when it names the real target; otherwise
        # (absolute links, links through other links) write the shortest relative path.
        literal = None if text.startswith("/") else os.path.normpath(os.path.join(parent, text))
        if literal != target:
            text = os.path.relpath(target or ".", parent or ".")
        path = self._dst(real_rel)
        if not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(text, path)
            self.summary.links += 1
        return target

    def ensure_target(self, rel: str | None) -> None:
        """Make a link's target directory exist (empty unless recorded), so the link resolves.

        Only directories: copying whatever file a link names would leak files outside the lists.
        """
        if rel is not None and os.path.isdir(self._src(rel)):
            self.ensure_dir(rel)

    def entry(self, rel: str) -> str | None:
        """Real directory of a class or bus entry: record the link and return its target."""
        return self.copy_link(rel) if os.path.islink(self._src(rel)) else self.resolve(rel)

    def node(self, real: str | None, files: tuple[str, ...] = (), links: tuple[str, ...] = ()) -> bool:
        """Record a directory's chosen files and links once; False when already done or absent."""
        if real is None or real in self.recorded or not os.path.isdir(self._src(real)):
            return False
        self.recorded.add(real)
        self.ensure_dir(real)
        for name in files:
            if os.path.isfile(self._src(f"{real}/{name}")):
                self.copy_file(f"{real}/{name}", ATTRIBUTE_LIMIT)
        for name in links:
            if os.path.islink(self._src(f"{real}/{name}")):
                self.ensure_target(self.copy_link(f"{real}/{name}"))
        return True

    def scandir(self, real: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self._src(real)) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            if os.path.lexists(self._src(real)):
                self.summary.skip(real, f"unlistable: {error.strerror or error}")
            return []

    # Stages -------------------------------------------------------------------------
    def record_all(self, progress: Progress) -> None:
        for stage, action in (
            ("proc files", self.proc_files),
            ("PCI functions", self.pci_functions),
            ("PCI drivers", self.pci_drivers),
            ("IOMMU groups and units", self.iommu),
            ("host-critical evidence (net, block, console)", self.host_critical_evidence),
            ("firmware, modules and /dev/vfio", self.firmware_and_modules),
            ("host files", self.host_files),
            ("kernel log", self.kernel_log),
        ):
            progress(f"Recording {stage}...")
            action()
        progress(
            f"Recorded {self.summary.functions} functions, {self.summary.groups} groups, "
            f"{self.summary.files} files, {self.summary.links} links; skipped {len(self.summary.skipped)}."
        )

    def proc_files(self) -> None:
        for rel in PROC_FILES:
            if self.source.exists(rel):
                self.copy_file(rel, PROC_LIMIT)

    def pci_functions(self) -> None:
        for address in sorted(name for name in self.source.listdir(PCI_DEVICES) if is_address(name)):
            device = self.entry(f"{PCI_DEVICES}/{address}")
            if device is None or not os.path.isdir(self._src(device)):
                continue
            self.ensure_dir(device)
            self.recorded.add(device)
            for item in self.scandir(device):
                if item.is_symlink():
                    if item.name in FUNCTION_LINKS or item.name.startswith("virtfn"):
                        self.function_link(f"{device}/{item.name}")
                elif item.is_file(follow_symlinks=False):
                    self.attribute(f"{device}/{item.name}", item)
            self.summary.functions += 1
        for rel in ("sys/bus/pci/drivers_probe", "sys/bus/pci/rescan"):
            if self.source.exists(rel):
                self.placeholder(rel)

    def attribute(self, rel: str, item: os.DirEntry[str]) -> None:
        name = item.name
        if BAR_FILE.match(name) or name in NEVER_READ:
            return
        try:
            readable = bool(item.stat(follow_symlinks=False).st_mode & 0o444)
        except OSError:
            readable = False
        if not readable:
            if name in PRESENCE_ONLY:
                self.placeholder(rel)
            return
        limit = CONFIG_LIMIT if name == "config" else ATTRIBUTE_LIMIT
        if not self.copy_file(rel, limit) and name in PRESENCE_ONLY:
            self.placeholder(rel)

    def function_link(self, rel: str) -> None:
        target = self.copy_link(rel)
        name = os.path.basename(rel)
        if name == "iommu_group":
            self.iommu_group(target)
        elif name == "iommu":
            self.iommu_unit(target)
        elif name == "driver":
            self.pci_driver(target)
        self.ensure_target(target)

    def pci_drivers(self) -> None:
        for name in sorted(self.source.listdir(PCI_DRIVERS)):
            self.pci_driver(self.entry(f"{PCI_DRIVERS}/{name}"))

    def pci_driver(self, real: str | None) -> None:
        if real is None or not self.node(real):
            return
        for item in self.scandir(real):
            if item.name in DRIVER_CONTROLS and not item.is_symlink():
                self.placeholder(f"{real}/{item.name}")
            elif is_address(item.name) and item.is_symlink():
                self.ensure_target(self.copy_link(f"{real}/{item.name}"))

    def iommu(self) -> None:
        for rel in (IOMMU_GROUPS, IOMMU_CLASS):
            if self.source.is_dir(rel):
                self.ensure_dir(self.resolve(rel) or rel)
        for group in sorted(self.source.listdir(IOMMU_GROUPS)):
            self.iommu_group(self.entry(f"{IOMMU_GROUPS}/{group}"))
        for unit in sorted(self.source.listdir(IOMMU_CLASS)):
            self.iommu_unit(self.entry(f"{IOMMU_CLASS}/{unit}"))

    def iommu_group(self, real: str | None) -> None:
        if real is None or not self.node(real, files=("type", "reserved_regions")):
            return
        self.summary.groups += 1
        for address in sorted(self.source.listdir(f"{real}/devices")):
            self.ensure_target(self.copy_link(f"{real}/devices/{address}"))

    def iommu_unit(self, real: str | None) -> None:
        """A dmarN (Intel, under devices/virtual/iommu) or ivhdN (AMD, under its PCI function)."""
        if real is None or not self.node(real):
            return
        for sub in ("", "/intel-iommu", "/amd-iommu"):
            self.readable_files(f"{real}{sub}")
        for name in sorted(self.source.listdir(f"{real}/devices")):
            self.ensure_target(self.copy_link(f"{real}/devices/{name}"))

    # What the host-critical checks walk: class entries whose real paths lead up to a
    # PCI function. Only the named files and links are kept (no MAC addresses or serials).
    def host_critical_evidence(self) -> None:
        for real in self.class_entries("sys/class/net"):
            self.net_interface(real)
        for directory in ("sys/block", "sys/class/block", "sys/dev/block"):
            for real in self.class_entries(directory):
                self.block_device(real)
        for real in self.class_entries("sys/class/drm", r"card\d+(-.*)?"):
            self.node(real, links=("device",))
        for real in self.class_entries("sys/class/graphics", r"fb\d+"):
            self.node(real, files=("name",), links=("device",))
        for real in self.class_entries("sys/class/vtconsole"):
            self.node(real, files=("name", "bind"))

    def class_entries(self, directory: str, pattern: str = ".*") -> list[str | None]:
        """Record the links of a class directory whose names match; return their real targets."""
        if not self.source.is_dir(directory):
            return []
        self.ensure_dir(self.resolve(directory) or directory)
        return [
            self.copy_link(f"{directory}/{item.name}")
            for item in self.scandir(directory)
            if item.is_symlink() and re.fullmatch(pattern, item.name)
        ]

    def net_interface(self, real: str | None) -> None:
        if not self.node(real, files=("operstate", "type", "bonding/slaves"), links=("device",)):
            return
        for item in self.scandir(real or ""):
            if item.name.startswith("lower_") and item.is_symlink():
                self.net_interface(self.copy_link(f"{real}/{item.name}"))
        for port in sorted(self.source.listdir(f"{real}/brif")):
            self.ensure_target(self.copy_link(f"{real}/brif/{port}"))

    def block_device(self, real: str | None) -> None:
        """A disk, partition or stacked device (dm, md), with its partitions and slaves."""
        if not self.node(real, files=("dev", "partition", "size", "ro", "removable", "dm/name"), links=("device",)):
            return
        for item in self.scandir(real or ""):
            if item.is_dir(follow_symlinks=False) and self.source.is_file(f"{real}/{item.name}/partition"):
                self.block_device(f"{real}/{item.name}")
        for slave in sorted(self.source.listdir(f"{real}/slaves")):
            self.block_device(self.copy_link(f"{real}/slaves/{slave}"))

    def firmware_and_modules(self) -> None:
        if self.source.is_dir("sys/firmware/efi"):
            self.ensure_dir("sys/firmware/efi")
            if self.source.is_dir("sys/firmware/efi/efivars"):
                self.ensure_dir("sys/firmware/efi/efivars")
                for name in self.source.listdir("sys/firmware/efi/efivars"):
                    self.placeholder(f"sys/firmware/efi/efivars/{name}")
        for name in sorted(self.source.listdir("sys/module")):
            if name.startswith(MODULE_PREFIXES):
                self.ensure_dir(f"sys/module/{name}")
                self.readable_files(f"sys/module/{name}")  # initstate: loaded as a module, not built in
                self.readable_files(f"sys/module/{name}/parameters")
        if self.source.is_dir("dev"):
            self.ensure_dir("dev")  # says /dev was looked at, so a missing dev/vfio is a fact
        if self.source.is_dir("dev/vfio"):
            self.ensure_dir("dev/vfio")
            for name in self.source.listdir("dev/vfio"):
                self.placeholder(f"dev/vfio/{name}")

    def readable_files(self, real: str) -> None:
        """The readable regular files directly in ``real`` (a small, bounded sysfs directory)."""
        for item in self.scandir(real) if self.source.is_dir(real) else []:
            if item.is_file(follow_symlinks=False) and item.stat(follow_symlinks=False).st_mode & 0o444:
                self.copy_file(f"{real}/{item.name}", ATTRIBUTE_LIMIT)

    def host_files(self) -> None:
        for pattern in HOST_FILES:
            if "*" not in pattern:
                if self.source.exists(pattern):
                    self.host_file(pattern, HOST_FILE_LIMIT)
                continue
            top = pattern[: pattern.index("*")].rstrip("/")
            try:
                os.listdir(self._src(top))
            except FileNotFoundError:
                continue
            except OSError as error:  # /boot/efi is often readable by root only
                self.summary.skip(top, f"unlistable: {error.strerror or error}")
                continue
            for rel in sorted(glob.glob(pattern, root_dir=self.source.root)):
                self.host_file(rel, HOST_FILE_LIMIT)
        # Tool markers: presence says the tool is installed. Non-merged-/usr systems keep
        # some tools in /bin and /sbin; on merged ones those are links to usr/ and add nothing.
        tops = [top for top in ("bin", "sbin") if self.source.is_dir(top) and not os.path.islink(self._src(top))]
        for marker in TOOL_MARKERS:
            for rel in [marker] + [f"{top}/{os.path.basename(marker)}" for top in tops]:
                real = self.resolve(rel)
                if real is not None and os.path.exists(self._src(real)):
                    self.placeholder(rel)
        release = self.source.read("proc/sys/kernel/osrelease")
        if release and "/" not in release:
            modules = f"lib/modules/{release}"
            if self.source.exists(f"{modules}/modules.builtin"):
                self.host_file(f"{modules}/modules.builtin", PROC_LIMIT)
            self.modules_dep(f"{modules}/modules.dep")

    def host_file(self, rel: str, limit: int) -> None:
        """Copy a host file's content; a link to /dev/null (a masked file) is recorded empty."""
        real = self.resolve(rel)
        if real is None:
            self.summary.skip(rel, "links outside the captured host")
        elif real == "dev/null":
            self.placeholder(rel)
        elif not os.path.isfile(self._src(real)):
            self.summary.skip(rel, "not a regular file")
        else:
            self.copy_file(rel, limit, source_rel=real)

    def modules_dep(self, rel: str) -> None:
        """Only the vfio and kvm lines: they say whether those modules exist for this kernel."""
        real = self.resolve(rel)
        if real is None or not os.path.isfile(self._src(real)):
            return
        try:
            data, _ = _read_capped(self._src(real), PROC_LIMIT)
        except OSError as error:
            self.summary.skip(rel, f"unreadable: {error.strerror or error}")
            return
        lines = [
            line
            for line in data.decode("utf-8", "replace").splitlines()
            if os.path.basename(line.split(":", 1)[0]).startswith(MODULE_PREFIXES)
        ]
        self.write(rel, "".join(line + "\n" for line in lines).encode())

    def kernel_log(self) -> None:
        lines = self.source.kernel_log()
        if lines is None:
            self.summary.skip("dmesg.txt", "the kernel log is unreadable (dmesg failed or kernel.dmesg_restrict)")
        else:
            self.write("dmesg.txt", "".join(line + "\n" for line in lines).encode())
