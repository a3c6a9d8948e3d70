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
can block for seconds and holds serial numbers), efivar contents (but for systemd-boot's
``LoaderInfo``, the loader's name and version), anything outside the lists of
:mod:`passthrough.capture.sysfs` and :mod:`passthrough.capture.files`, which record
each area; :mod:`passthrough.capture.recorder` copies each path. Symlinks stay relative,
so the tree can be moved. The tree is written into a temporary sibling of ``dest`` and
renamed at the end: a failed capture leaves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from passthrough.capture.files import FileRecording
from passthrough.capture.summary import CaptureSummary
from passthrough.capture.sysfs import SysfsRecording
from passthrough.errors import NotAHostTree, PassthroughError
from passthrough.host import HostTree

Progress = Callable[[str], None]


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
        with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as handle:
            return tomllib.load(handle)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None


class _Recorder(SysfsRecording, FileRecording):
    """Records every area of a host, stage by stage, into ``staging``."""

    def record_all(self, progress: Progress) -> None:
        for stage, action in (
            ("proc files", self.proc_files),
            ("PCI functions", self.pci_functions),
            ("PCI drivers", self.pci_drivers),
            ("IOMMU groups and units", self.iommu),
            ("host-critical evidence (net, block, console)", self.host_critical_evidence),
            ("firmware, modules and /dev/vfio", self.firmware_and_modules),
            ("NUMA nodes", self.numa_nodes),
            ("host files", self.host_files),
            ("kernel log", self.kernel_log),
        ):
            progress(f"Recording {stage}...")
            action()
        progress(
            f"Recorded {self.summary.functions} functions, {self.summary.groups} groups, "
            f"{self.summary.files} files, {self.summary.links} links; skipped {len(self.summary.skipped)}."
        )
