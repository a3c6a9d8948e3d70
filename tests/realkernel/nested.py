"""A Linux VM inside a guest: the running QEMU the VM tests hot-plug host functions into.

The nested VM boots the Debian vmlinux the guests run (the guest sees the cache, since the
host's / is shared) with a tiny initramfs: static busybox and an /init that mounts proc,
sys and dev, prints :data:`READY` on the serial console and sleeps. A real kernel in the
VM is what acknowledges a PCIe hot-unplug (pciehp); with no OS, QEMU never finishes one.
After the ready line every kernel message goes to the console too, so the log says what
the nested kernel made of each hot-plug.

Booting that kernel under TCG inside a TCG guest took two to four minutes of the vm
scenario. So the host boots the same VM once per test session (single-level TCG: about 4 s),
stops it at its ready line and saves its state with QMP ``migrate`` (:func:`save_state`);
the guest starts the same QEMU command line with ``-incoming`` and the VM goes on from
there, in under a second of host time (:meth:`NestedVm.wait_ready`). The kernel that then
enumerates hot-plugged functions and releases them on unplug is the same running Linux.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from tests.realkernel.guest import BUSYBOX, QEMU, _cpio_entry
from tests.realkernel.kernel import CACHE, ensure_kernel

READY = "nested: ready"
INIT = f"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo 8 >/proc/sys/kernel/printk
echo "{READY} after $(cut -d' ' -f1 /proc/uptime) s of uptime"
while :; do sleep 3600; done
"""
# What the brief measured in the intel guest: this reaches /init in 54 s under nested TCG.
KERNEL_ARGS = "console=ttyS0 panic=-1 no_timer_check tsc=reliable nowatchdog rcupdate.rcu_cpu_stall_suppress=1 quiet"


def build_initramfs(target: Path) -> Path:
    """A newc cpio with busybox, its applets and :data:`INIT`."""
    assert BUSYBOX is not None
    entries: list[bytes] = []
    inode = iter(range(1, 100000))
    for directory in ("bin", "dev", "proc", "sys"):
        entries.append(_cpio_entry(directory, 0o040755, ino=next(inode)))
    entries.append(_cpio_entry("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes(), next(inode)))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            entries.append(_cpio_entry(f"bin/{applet}", 0o120777, b"busybox", next(inode)))
    entries.append(_cpio_entry("init", 0o100755, INIT.encode(), next(inode)))
    entries.append(_cpio_entry("TRAILER!!!", 0))
    target.write_bytes(b"".join(entries))
    return target


class NestedVm:
    """``with NestedVm(folder, ports=3) as vm: vm.wait_ready()``: QEMU (TCG, q35) with a QMP socket and
    ``ports`` empty hot-pluggable root ports (rp1, rp2, …); killed on leaving."""

    def __init__(self, folder: Path, *, ports: int = 3, memory_mb: int = 256, state: Path | None = None) -> None:
        self.folder = folder
        self.socket = folder / "nested.qmp"
        self.console = folder / "nested-console.log"
        kernel = ensure_kernel()
        initrd = build_initramfs(folder / "nested.cpio")
        assert QEMU is not None
        self.argv = [
            QEMU, "-M", "q35", "-accel", "tcg", "-cpu", "max", "-m", str(memory_mb), "-name", "nested",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-chardev", f"file,id=console,path={self.console}", "-serial", "chardev:console",
            "-kernel", str(kernel.vmlinux), "-initrd", str(initrd), "-append", KERNEL_ARGS,
            "-qmp", f"unix:{self.socket},server=on,wait=off",
        ]  # fmt: skip
        for number in range(1, ports + 1):
            self.argv += ["-device", f"pcie-root-port,id=rp{number},chassis={number},slot={number}"]
        # Restored from a saved state: the same command line, plus where the state comes from.
        self.state = state
        if state is not None:
            self.argv += ["-incoming", f"exec:cat {shlex.quote(str(state))}"]
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.ready_after: float | None = None

    def __enter__(self) -> NestedVm:
        for stale in (self.socket, self.console):  # a previous VM's: its ready line must not count
            stale.unlink(missing_ok=True)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=(self.folder / "nested-qemu.log").open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds from start until the nested /init printed its ready line (and the QMP socket exists),
        or, restored, until the restored VM runs."""
        assert self.process is not None
        if self.ready_after is not None:
            return self.ready_after
        deadline = self.started + timeout
        while (
            not (self._restored_and_running() if self.state is not None else READY in self.text())
            or not self.socket.exists()
        ):
            if self.process.poll() is not None:
                qemu_log = (self.folder / "nested-qemu.log").read_text(errors="replace")
                raise AssertionError(
                    f"nested QEMU exited ({self.process.returncode}): {qemu_log}\n{self.text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"nested Linux not ready after {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        self.ready_after = time.monotonic() - self.started
        return self.ready_after

    def _restored_and_running(self) -> bool:
        """True once the incoming state is loaded and the VM runs (saved stopped, so it is let go here)."""
        if not self.socket.exists():
            return False
        try:
            status = qmp(self.socket, "query-status")["status"]
            if status == "paused":  # the state was saved from a stopped VM
                qmp(self.socket, "cont")
                return False
        except (OSError, ValueError, KeyError):
            return False  # the monitor is not up yet, or busy loading
        return bool(status == "running")


def qmp(path: Path, command: str, arguments: dict[str, object] | None = None) -> dict[str, object]:
    """One QMP command on a fresh connection: what it returned; RuntimeError with QEMU's words on an error."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(30)
        connection.connect(str(path))
        stream = connection.makefile("rw")
        stream.readline()  # the greeting
        for request in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments or {}}):
            stream.write(json.dumps(request) + "\n")
            stream.flush()
            while True:
                answer = json.loads(stream.readline())
                if "error" in answer:
                    raise RuntimeError(f"QMP {request['execute']}: {answer['error'].get('desc')}")
                if "return" in answer:
                    break  # events ("event": ...) before it are skipped
    result = answer["return"]
    return result if isinstance(result, dict) else {}


_SAVING = threading.Lock()
_saved: dict[tuple[int, int], Path] = {}


def save_state(*, ports: int = 3, memory_mb: int = 256, timeout: float = 120) -> Path:
    """The nested VM booted here to its ready line and saved, stopped, for guests to restore (once per session)."""
    with _SAVING:
        key = (ports, memory_mb)
        if key in _saved and _saved[key].exists():
            return _saved[key]
        CACHE.mkdir(parents=True, exist_ok=True)
        target = CACHE / f"nested-{os.getpid()}-{ports}-{memory_mb}.state"
        partial = target.with_suffix(".partial")
        folder = Path(tempfile.mkdtemp(prefix="nested-save-", dir=CACHE))
        try:
            with NestedVm(folder, ports=ports, memory_mb=memory_mb) as vm:
                vm.wait_ready(timeout)
                qmp(vm.socket, "stop")
                qmp(vm.socket, "migrate", {"uri": f"exec:cat > {shlex.quote(str(partial))}"})
                deadline = time.monotonic() + timeout
                while (status := qmp(vm.socket, "query-migrate").get("status")) not in ("completed", "failed"):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"saving the nested VM's state did not finish in {timeout} s ({status})")
                    time.sleep(0.1)
                if status != "completed":
                    raise RuntimeError(f"saving the nested VM's state failed: {qmp(vm.socket, 'query-migrate')}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        partial.replace(target)
        atexit.register(target.unlink, missing_ok=True)
        _saved[key] = target
        return target
