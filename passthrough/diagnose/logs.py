"""The lines a diagnosis reads: the kernel log, libvirt's VM logs, and log files given by path.

The kernel log comes from :meth:`HostTree.kernel_log` (``dmesg.txt`` in a captured tree,
``dmesg`` on the live host). libvirt writes one log per VM under ``/var/log/libvirt/qemu/``;
QEMU's refusals ("group 1 is not viable", "Device or resource busy") land there, not in the
kernel log. Only the tail of a long log is read: the failure a user asks about is the latest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from passthrough.diagnose.finding import LogLine
from passthrough.errors import PassthroughError
from passthrough.evidence import host_path
from passthrough.host import HostTree

LIBVIRT_QEMU_LOGS = "var/log/libvirt/qemu"
TAIL_BYTES = 4 << 20  # the last 4 MiB of each VM log
KERNEL_LOG = "dmesg"


class UnreadableLog(PassthroughError):
    code = "unreadable_log"


@dataclass
class Logs:
    lines: list[LogLine] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def add(self, source: str, text: str) -> None:
        self.sources.append(source)
        self.lines += [LogLine(source, line.rstrip("\r")) for line in text.splitlines()]


def read_tail(path: str, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a file as text, from a whole line on; raises OSError."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - limit))
        data = handle.read()
    if size > limit:
        data = data.split(b"\n", 1)[-1]
    return data.decode("utf-8", "replace")


def read_given_log(path: str) -> str:
    """A log named on the command line; a missing or unreadable one is bad input."""
    if not os.path.isfile(path):
        raise UnreadableLog(f"{path} is not a file.", path=path, hint="Give --log the path of a kernel or VM log.")
    try:
        return read_tail(path)
    except OSError as error:
        raise UnreadableLog(
            f"{path} cannot be read: {error.strerror}.", path=path, hint="Run as a user who may read it."
        ) from error


def collect(
    tree: HostTree,
    given: list[str] | None = None,
    *,
    vm_logs: bool = True,
    kernel_log: Callable[[], list[str] | None] | None = None,
) -> Logs:
    """Every line to diagnose: the kernel log (from ``kernel_log``, else the tree's), libvirt's VM
    logs in the tree, then ``given`` files."""
    logs = Logs()
    kernel = (kernel_log or tree.kernel_log)()
    if kernel is None:
        logs.unreadable.append(
            f"{KERNEL_LOG}: the kernel log is unreadable (no dmesg.txt in a captured tree; on this host dmesg "
            "failed or kernel.dmesg_restrict keeps it from this user)"
        )
    else:
        logs.sources.append(KERNEL_LOG)
        logs.lines += [LogLine(KERNEL_LOG, line) for line in kernel]
    if vm_logs:
        for name in sorted(tree.listdir(LIBVIRT_QEMU_LOGS)):
            relative = f"{LIBVIRT_QEMU_LOGS}/{name}"
            if not name.endswith(".log") or not tree.is_file(relative):
                continue
            try:
                logs.add(host_path(relative), read_tail(tree.path(relative)))
            except OSError as error:
                logs.unreadable.append(f"{host_path(relative)}: {error.strerror}")
    for path in given or []:
        logs.add(path, read_given_log(path))
    return logs
