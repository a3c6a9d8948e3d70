"""Who runs a job while it runs, and whether that process is still alive.

A job marked running names its owner: the machine, that machine's boot, the process id and
the process's start time (``/proc/PID/stat`` field 22, in clock ticks since boot). The pair
of pid and start time survives pid reuse; the boot id tells a process of an earlier boot
from one of this boot. The reconciler puts back a job only when its owner is gone, so a
root shell's ``manage.py device bind`` that is still running is left alone.

These are facts about processes on the machine this code runs on, not about the host's
hardware, so they are read from the real /proc whatever host tree the worker reads.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def _boot_id() -> str:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def _start_time(pid: int) -> str | None:
    """The process's start time, or None when it does not run: no such pid, or a zombie.

    A killed worker's pool process can linger as a zombie until something reaps it (PID 1
    here is not always an init that does), with its /proc entry and start time intact; it
    runs no code, so it owns nothing.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) <= 19 or fields[0] in ("Z", "X", "x"):  # field 3, the state: zombie or dead
        return None
    return fields[19]


@dataclass(frozen=True)
class Owner:
    machine: str
    boot: str
    pid: int
    start: str

    def __str__(self) -> str:
        return f"{self.machine} {self.boot} {self.pid} {self.start}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        parts = text.split()
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])


def current() -> Owner:
    pid = os.getpid()
    return Owner(socket.gethostname(), _boot_id(), pid, _start_time(pid) or "0")


def is_gone(text: str) -> bool:
    """True when the owner recorded as ``text`` certainly no longer runs.

    An owner on another machine cannot be checked from here: it is not called gone. A job
    with no owner recorded (written by an older version) is.
    """
    owner = Owner.parse(text)
    if owner is None:
        return True
    if owner.machine != socket.gethostname():
        return False
    if owner.boot != _boot_id():
        return True
    return _start_time(owner.pid) != owner.start
