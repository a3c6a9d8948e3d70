"""HostTree: the one place that turns a root directory into paths under sys/ and proc/.

Every reader in ``passthrough/`` goes through a HostTree, so the same code reads the
live host (root ``/``) and a captured tree (``--root DIR``). Reads never raise for a
missing or unreadable file: an odd kernel gives ``None``, and callers report the fact
as absent rather than guessing.
"""

from __future__ import annotations

import os
from pathlib import Path

from passthrough.errors import NotAHostTree, SysfsWriteError

PCI_DEVICES = "sys/bus/pci/devices"
PCI_DRIVERS = "sys/bus/pci/drivers"
IOMMU_GROUPS = "sys/kernel/iommu_groups"
IOMMU_CLASS = "sys/class/iommu"


class HostTree:
    """A Linux host's ``/sys``, ``/proc``, ``/etc`` and ``/dev``, under ``root``."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        path = os.path.abspath(os.fspath(root))
        self.root = path
        # "/" + "sys/..." must not become "//sys/..."; every path is prefix + relative.
        self._prefix = "" if path == "/" else path

    @classmethod
    def open(cls, root: str | os.PathLike[str] = "/") -> HostTree:
        """A HostTree for ``root``, or :class:`NotAHostTree` with one clear sentence."""
        text = os.fspath(root)
        if not os.path.exists(text):
            raise NotAHostTree(
                f"{text} does not exist.",
                hint="Give --root a directory made by `manage.py capture`, or / for this host.",
            )
        if not os.path.isdir(text):
            raise NotAHostTree(
                f"{text} is not a directory.",
                hint="Give --root a directory made by `manage.py capture`, or / for this host.",
            )
        tree = cls(text)
        if not (tree.is_dir("sys") or tree.is_file("proc/cpuinfo")):
            raise NotAHostTree(
                f"{text} is not a host tree: it has neither sys/ nor proc/cpuinfo.",
                hint="Give --root a directory made by `manage.py capture`, or / for this host.",
            )
        return tree

    @property
    def is_live(self) -> bool:
        return self.root == "/"

    def path(self, relative: str) -> str:
        """Absolute path of ``relative`` (written without a leading slash) under the root."""
        return f"{self._prefix}/{relative.lstrip('/')}"

    def relative(self, absolute: str) -> str:
        """The inverse of :meth:`path` for a path inside the tree."""
        if self._prefix and absolute.startswith(self._prefix + "/"):
            return absolute[len(self._prefix) + 1 :]
        return absolute.lstrip("/")

    # Reads. os.open/os.read rather than open(): a scan reads ~20 small files per
    # function and the file-object machinery would triple its cost.
    def read(self, relative: str, limit: int = 65536) -> str | None:
        """Stripped text of a file, or None when it is missing or unreadable."""
        return read_text(self.path(relative), limit)

    def read_bytes(self, relative: str, limit: int = 4096) -> bytes | None:
        try:
            fd = os.open(self.path(relative), os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.read(fd, limit)
        except OSError:
            return None
        finally:
            os.close(fd)

    def readlink(self, relative: str) -> str | None:
        try:
            return os.readlink(self.path(relative))
        except OSError:
            return None

    def listdir(self, relative: str) -> list[str]:
        try:
            return os.listdir(self.path(relative))
        except OSError:
            return []

    def exists(self, relative: str) -> bool:
        return os.path.lexists(self.path(relative))

    def is_dir(self, relative: str) -> bool:
        return os.path.isdir(self.path(relative))

    def is_file(self, relative: str) -> bool:
        return os.path.isfile(self.path(relative))

    def realpath(self, relative: str) -> str:
        """Resolved path, relative to the root. Captured trees keep links relative, so this stays inside."""
        return self.relative(os.path.realpath(self.path(relative)))

    def link_name(self, relative: str) -> str | None:
        """Last component of a symlink's target (``driver`` -> ``vfio-pci``), or None."""
        target = self.readlink(relative)
        return None if target is None else target.rstrip("/").rsplit("/", 1)[-1]

    def kernel_log(self) -> list[str] | None:
        """Kernel log lines: ``dmesg.txt`` in a captured tree, ``dmesg`` on the live host.

        None when unreadable (``kernel.dmesg_restrict`` keeps it from non-root users).
        """
        if not self.is_live:
            text = self.read("dmesg.txt", limit=16 * 1024 * 1024)
            return None if text is None else text.splitlines()
        import subprocess

        try:
            result = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.splitlines() if result.returncode == 0 else None

    # Writes: only privileged operations (passthrough.ops) call this, on the root worker.
    def write(self, relative: str, value: str) -> None:
        """Store ``value`` into a kernel attribute, as ``echo -n value > attr`` would.

        Raises :class:`SysfsWriteError` carrying the path and the kernel's errno; a test
        double of the kernel (see ``passthrough.kerneldouble``) overrides this method.
        """
        path = self.path(relative)
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as error:
            raise SysfsWriteError(
                f"Cannot open {relative} for writing: {error.strerror}.", path=path, errno=error.errno
            ) from error
        try:
            os.write(fd, value.encode())
        except OSError as error:
            raise SysfsWriteError(
                f"The kernel refused {value!r} for {relative}: {error.strerror}.", path=path, errno=error.errno
            ) from error
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"HostTree({self.root!r})"


def read_text(path: str, limit: int = 4096) -> str | None:
    """Stripped text of one file, or None. The default limit is a sysfs attribute's (one page)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, limit)
    except OSError:
        # sysfs attributes can fail with EIO/ENODEV/EINVAL on odd hardware.
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").strip()


def as_tree(root: HostTree | str | os.PathLike[str]) -> HostTree:
    return root if isinstance(root, HostTree) else HostTree(root)


def default_root() -> Path:
    return Path(os.environ.get("PASSTHROUGH_ROOT", "/"))
