"""What guest-side tests share: the live tree, sysfs reads, the device command, waiting for drivers."""

from __future__ import annotations

import contextlib
import json
import time
from io import StringIO
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError

PCI = Path("/sys/bus/pci/devices")


def driver(address: str) -> str | None:
    link = PCI / address / "driver"
    return link.resolve().name if link.exists() else None


def group(address: str) -> int:
    return int((PCI / address / "iommu_group").resolve().name)


def wait_for_driver(address: str, wanted: str | None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while driver(address) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"{address} is on {driver(address)}, not {wanted}, after {timeout} s")
        time.sleep(0.1)


class Ran:
    """What a management command did, run in this process (a new Python costs ~10 s under TCG)."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr


def manage(*argv: str) -> Ran:
    """``manage.py ARGV`` in this process: its exit code (SystemExit, 2 for a CommandError) and output."""
    out, err = StringIO(), StringIO()
    code = 0
    try:
        call_command(*argv, stdout=out, stderr=err)
    except CommandError as error:
        code = 2
        err.write(str(error))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


def device(*argv: str) -> dict[str, Any]:
    """``manage.py device ARGV --format json``: the job and result it prints (also when the job did not
    succeed, exit 1) with ``exit``, or ``{"error", "exit": 2}`` for bad input."""
    ran = manage("device", *argv, "--format", "json")
    if not ran.stdout:
        return {"error": ran.stderr, "exit": ran.code}
    return {**json.loads(ran.stdout), "exit": ran.code}


def dmesg_since(mark: int) -> str:
    """What the kernel logged after ``mark`` (a length of /dev/kmsg-free dmesg text from :func:`dmesg_mark`)."""
    return _dmesg()[mark:]


def dmesg_mark() -> int:
    return len(_dmesg())


def _dmesg() -> str:
    import subprocess

    return subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout


# Processes the kernel holds, and putting a function back by hand ---------------------------
def driver_override(address: str) -> str | None:
    value = (PCI / address / "driver_override").read_text().strip()
    return None if value in ("", "(null)") else value


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, D, Z…), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0]


def wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text().strip()
    except OSError:
        return ""


def kernel_stack(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stack").read_text()
    except OSError as error:
        return f"({error})"


def wait_until_blocked_in(pid: int, function: str, timeout: float = 60) -> None:
    """Wait until ``pid`` sleeps uninterruptibly (state D) in the kernel function ``function``."""
    deadline = time.monotonic() + timeout
    while not (process_state(pid) == "D" and wchan(pid) == function):
        if process_state(pid) in (None, "Z"):
            raise AssertionError(f"process {pid} ended before it blocked in {function}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"process {pid} is in state {process_state(pid)} at {wchan(pid) or '?'}, not D in {function}, "
                f"after {timeout} s:\n{kernel_stack(pid)}"
            )
        time.sleep(0.05)


def wait_until_exited(pid: int, timeout: float = 60) -> None:
    """Wait until ``pid`` is gone or a zombie (it runs no more code)."""
    deadline = time.monotonic() + timeout
    while process_state(pid) not in (None, "Z"):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"process {pid} still in state {process_state(pid)} after {timeout} s:\n{kernel_stack(pid)}"
            )
        time.sleep(0.05)


def put_back_by_hand(address: str, wanted: str) -> None:
    """Bind ``address`` to ``wanted`` with plain sysfs writes, override cleared: a test's clean-up."""
    current = driver(address)
    if current != wanted:
        if current is not None:
            (PCI / address / "driver" / "unbind").write_text(address)
        (PCI / address / "driver_override").write_text(wanted)
        with contextlib.suppress(OSError):  # wait_for_driver below says what became of it
            Path(f"/sys/bus/pci/drivers/{wanted}/bind").write_text(address)
    if driver_override(address) is not None:
        (PCI / address / "driver_override").write_text("\n")
    wait_for_driver(address, wanted)


class MappedCard:
    """Hold a sound card the way the product's open-file check cannot see: a mapping of its
    PCM status page, with the file descriptor closed at once.

    The mapping keeps the card referenced, so snd_card_free (a sound driver's unbind) sleeps
    until :meth:`close` unmaps it, while /proc/PID/fd names no file of the card: the bind
    passes its validation (which refuses a card with open files) and then waits in the kernel.
    libc's mmap, not Python's mmap module, which keeps a duplicate of the descriptor open.
    """

    STATUS_PAGE = 0x80000000  # SNDRV_PCM_MMAP_OFFSET_STATUS
    SIZE = 4096

    def __init__(self, node: str = "/dev/snd/pcmC0D0p") -> None:
        import ctypes
        import mmap
        import os

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.mmap.restype = ctypes.c_void_p
        self.libc.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        self.libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        fd = os.open(node, os.O_RDWR | os.O_NONBLOCK)
        try:
            address = self.libc.mmap(None, self.SIZE, mmap.PROT_READ, mmap.MAP_SHARED, fd, self.STATUS_PAGE)
        finally:
            os.close(fd)
        if address in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap of {node}'s status page failed")
        self.address: int | None = address

    def close(self) -> None:
        if self.address is not None:
            self.libc.munmap(self.address, self.SIZE)
            self.address = None
