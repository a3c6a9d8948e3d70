"""Boot a Debian kernel under QEMU with emulated PCI devices and an IOMMU, and run a command in it.

The guest runs this machine's own userland: ``/`` is shared read-only over virtio-9p, a
tmpfs overlay on top makes it writable (writes die with the guest), and ``chroot`` enters
it, so the project's code, its ``.venv`` and Debian's redis-server and qemu run inside
unchanged. A second, writable 9p share (the run's work folder, mounted at the same path
inside) carries the script in and the results out. The initramfs holds only busybox, the
modules that mount the shares, and ``/init``; the other modules come from the cached
kernel tree, bind-mounted at ``/lib/modules/<version>``, loaded by busybox's modprobe.

The emulation is TCG (software): KVM needs vmx/svm on this machine's CPU, which CI does
not have. ``-cpu max`` under TCG offers svm to the guest.
"""

from __future__ import annotations

import atexit
import compileall
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.realkernel.kernel import CACHE, Kernel, KernelUnavailable, ensure_kernel

QEMU = shutil.which("qemu-system-x86_64")
BUSYBOX = shutil.which("busybox")
# What mounts the two 9p shares and the overlay; insmod'ed by /init in this order.
BOOT_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay"]

# Software emulation on a loaded machine runs a guest's clock in fits and starts: without
# these a guest sometimes panics in the boot-time IO-APIC timer check ("timer doesn't work
# through Interrupt-remapped IO-APIC") or stalls in RCU and watchdog warnings.
KERNEL_ARGS = (
    "console=ttyS0 panic=-1 loglevel=4 no_timer_check tsc=reliable nowatchdog rcupdate.rcu_cpu_stall_suppress=1"
)
# The 9p shares sit at slots 1d and 1e (beside the chipset's 1f), so the scenarios' own
# devices may take any low slot, 02.0 included.

# The IOMMUs QEMU emulates, and the kernel arguments each wants.
IOMMUS = {
    "intel": (["-device", "intel-iommu,intremap=on,caching-mode=on"], "intel_iommu=on iommu=pt"),
    "amd": (["-device", "amd-iommu,intremap=on"], "iommu=pt"),  # AMD-Vi is on by default; amd_iommu=on is no option
    "none": ([], ""),
}

INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /boot-modules); do insmod "/modules/$module" || echo "init: insmod $module failed"; done
. /guest.env
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || echo "init: mounting / failed"
mount -t tmpfs -o size=75% tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot || echo "init: overlay failed"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "/newroot$GUEST_WORK" || echo "init: results share failed"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
# No tmpfs over /tmp: the checkout (a CI clone, say) may live there; the overlay takes writes.
mount -t tmpfs tmpfs /newroot/run
mkdir -p "/newroot/lib/modules/$GUEST_KERNEL_VERSION"
mount --bind "/newroot$GUEST_MODULES" "/newroot/lib/modules/$GUEST_KERNEL_VERSION"
# Debian has no modprobe without kmod; busybox's reads the same modules.dep. The kernel's own
# requests (request_module: codecs, crypto) run /sbin/modprobe in this initramfs' root.
for tool in modprobe insmod rmmod lsmod; do ln -sf /bin/busybox "/newroot/usr/sbin/$tool"; done
mkdir -p "/lib/modules/$GUEST_KERNEL_VERSION" /sbin
mount --bind "/newroot$GUEST_MODULES" "/lib/modules/$GUEST_KERNEL_VERSION"
ln -sf /bin/busybox /sbin/modprobe
echo /sbin/modprobe >/proc/sys/kernel/modprobe
ip link set lo up
echo "init: running the guest script"
chroot /newroot /bin/sh "$GUEST_WORK/run.sh" >"/newroot$GUEST_WORK/output.log" 2>&1
echo $? >"/newroot$GUEST_WORK/rc"
dmesg >"/newroot$GUEST_WORK/dmesg.log"
sync
umount "/newroot$GUEST_WORK"
echo "init: done"
poweroff -f
"""


@dataclass
class GuestRun:
    """What a guest left behind: its exit code, its script's output, the console and dmesg."""

    work: Path
    returncode: int | None
    seconds: float
    qemu_returncode: int | None
    timed_out: bool = False

    def text(self, name: str) -> str:
        path = self.work / name
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def output(self) -> str:
        return self.text("output.log")

    @property
    def console(self) -> str:
        return self.text("console.log")

    def describe(self) -> str:
        """The tail of everything, for a failure message."""
        return (
            f"guest script exit {self.returncode}, qemu exit {self.qemu_returncode}, "
            f"{self.seconds:.1f} s{' (timed out)' if self.timed_out else ''}\n"
            f"--- output (tail) ---\n{self.output[-4000:]}\n--- console (tail) ---\n{self.console[-3000:]}"
        )


@dataclass
class Machine:
    """One guest: an IOMMU, PCI devices (QEMU ``-device`` values) and kernel arguments."""

    iommu: str = "intel"
    devices: list[str] = field(default_factory=list)
    append: str = ""
    memory_mb: int = 2048
    # One vCPU: TCG with two costs more than it gives (scenario 1, worker and test process
    # side by side: 185 s with two vCPUs beside four other guests, 136 s alone with one).
    cpus: int = 1
    extra: list[str] = field(default_factory=list)  # more QEMU arguments (-audiodev …)

    def qemu_argv(self, kernel: Kernel, initrd: Path, work: Path) -> list[str]:
        assert QEMU is not None
        iommu_args, iommu_append = IOMMUS[self.iommu]
        argv = [
            QEMU, "-M", "q35,kernel-irqchip=split", "-accel", "tcg", "-cpu", "max",
            "-smp", str(self.cpus), "-m", str(self.memory_mb),
            *iommu_args,
            "-nodefaults", "-no-user-config", "-display", "none", "-nic", "none", "-no-reboot",
            "-chardev", f"file,id=console,path={work / 'console.log'}", "-serial", "chardev:console",
            "-kernel", str(kernel.vmlinux), "-initrd", str(initrd),
            "-append", " ".join(filter(None, [KERNEL_ARGS, iommu_append, self.append])),
            "-fsdev", "local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,addr=1d.0",
            "-fsdev", f"local,id=results,path={work},security_model=none",
            "-device", "virtio-9p-pci,fsdev=results,mount_tag=results,addr=1e.0",
        ]  # fmt: skip
        for device in self.devices:
            argv += ["-device", device]
        return argv + self.extra


def unavailable_reason() -> str | None:
    """Why guests cannot boot here, or None."""
    if QEMU is None:
        return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86; scripts/test installs it as root)"
    if BUSYBOX is None:
        return "busybox is not installed (apt-get install busybox-static; scripts/test installs it as root)"
    if os.geteuid() != 0:
        return "the guest shares / with QEMU's 9p server, which must run as root to read every file"
    return None


# The initramfs ---------------------------------------------------------------------------
def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    out = header + encoded
    out += b"\0" * (-len(out) % 4)
    out += data + b"\0" * (-len(data) % 4)
    return out


def build_initramfs(kernel: Kernel, target: Path) -> Path:
    """A newc cpio: busybox, its applets, the boot modules and /init. Cached beside the kernel.

    Guests boot from several threads at once: the first builds it, under the cache's lock."""
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _write_initramfs(kernel, target)
    return target


def _write_initramfs(kernel: Kernel, target: Path) -> None:
    assert BUSYBOX is not None
    entries: list[bytes] = []
    inode = iter(range(1, 100000))
    for directory in ("bin", "dev", "proc", "sys", "modules", "lower", "upper", "newroot"):
        entries.append(_cpio_entry(directory, 0o040755, ino=next(inode)))
    entries.append(_cpio_entry("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes(), next(inode)))
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":  # --list names busybox itself: a link over it would loop
            entries.append(_cpio_entry(f"bin/{applet}", 0o120777, b"busybox", next(inode)))
    order = []
    for module in kernel.dependencies(BOOT_MODULES):
        entries.append(_cpio_entry(f"modules/{module.name}", 0o100644, module.read_bytes(), next(inode)))
        order.append(module.name)
    entries.append(_cpio_entry("boot-modules", 0o100644, "\n".join(order).encode() + b"\n", next(inode)))
    entries.append(_cpio_entry("init", 0o100755, INIT.encode(), next(inode)))
    entries.append(_cpio_entry("TRAILER!!!", 0))
    partial = target.with_suffix(".partial")
    partial.write_bytes(b"".join(entries))
    partial.replace(target)


# The checkout's bytecode, written on this side before a guest boots. A guest compiles every
# module it imports whose __pycache__ is missing (PYTHONDONTWRITEBYTECODE is common, and the guests
# set it), and compiling under TCG costs seconds per Python process: each guest runs one pytest,
# and the worker scenario three Celery workers more. Stale files are rewritten by mtime as Python
# itself would; __pycache__/ is ignored by git.
_PREPARING = threading.Lock()
_compiled_once: list[Path] = []


def compile_checkout(repo: Path) -> None:
    with _PREPARING:
        if repo in _compiled_once:
            return
        for folder in ("passthrough", "webui", "tests"):
            compileall.compile_dir(repo / folder, quiet=2, workers=1)
        _compiled_once.append(repo)


def migrated_database(repo: Path) -> Path:
    """A SQLite database with every migration applied, made here once per test session.

    pytest-django would create the guest's test database and run every migration inside
    the guest first: 10 to 15 s of each guest's run under TCG, against under 2 s here. The
    guests copy this one instead (tests/realkernel_guest/conftest.py, ``django_db_setup``).
    """
    target = CACHE / f"migrated-{os.getpid()}.sqlite3"
    with _PREPARING:
        if not target.exists():
            partial = target.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            env = {**os.environ, "DATABASE_URL": f"sqlite:///{partial}", "DJANGO_SETTINGS_MODULE": "webui.settings"}
            done = subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=repo, env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"migrating the guests' database failed:\n{done.stdout}{done.stderr}")
            partial.replace(target)
            atexit.register(target.unlink, missing_ok=True)
    return target


def boot(machine: Machine, script: str, timeout: float = 600, keep: bool = False) -> GuestRun:
    """Boot ``machine``, run ``script`` (sh, as root, cwd = the repository) inside, power off.

    The work folder holds run.sh, output.log, rc, console.log and dmesg.log afterwards;
    it sits under the cache and the caller removes it (``GuestRun.work``)."""
    kernel = ensure_kernel()
    initrd = build_initramfs(kernel, CACHE / kernel.package / f"initramfs-{_initramfs_key()}.cpio")
    work = Path(tempfile.mkdtemp(prefix="guest-", dir=CACHE))
    repo = Path(__file__).resolve().parents[2]
    compile_checkout(repo)
    database = migrated_database(repo)
    (work / "run.sh").write_text(
        f"cd {shlex.quote(str(repo))}\nexport GUEST_MIGRATED_DB={shlex.quote(str(database))}\n{script}\n"
    )
    env_lines = {
        "GUEST_WORK": str(work),
        "GUEST_MODULES": str(kernel.modules),
        "GUEST_KERNEL_VERSION": kernel.version,
    }
    # /init reads these from the initramfs' /guest.env: a second tiny cpio, appended (the
    # kernel unpacks concatenated archives in order), so the big one stays cached.
    extra = _cpio_entry(
        "guest.env", 0o100644, "".join(f"{k}={shlex.quote(v)}\n" for k, v in env_lines.items()).encode(), 1
    ) + _cpio_entry("TRAILER!!!", 0)
    combined = work / "initrd.cpio"
    with combined.open("wb") as out, initrd.open("rb") as cached:
        shutil.copyfileobj(cached, out)
        out.write(extra)
    started = time.monotonic()
    process = subprocess.Popen(
        machine.qemu_argv(kernel, combined, work), stdin=subprocess.DEVNULL,
        stdout=(work / "qemu.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    timed_out = False
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        process.kill()
        process.wait()
    combined.unlink(missing_ok=True)
    rc_text = (work / "rc").read_text().strip() if (work / "rc").exists() else ""
    run = GuestRun(
        work=work,
        returncode=int(rc_text) if rc_text.lstrip("-").isdigit() else None,
        seconds=time.monotonic() - started,
        qemu_returncode=process.returncode,
        timed_out=timed_out,
    )
    return run


def _initramfs_key() -> str:
    import hashlib

    assert BUSYBOX is not None
    digest = hashlib.sha256(INIT.encode() + " ".join(BOOT_MODULES).encode())
    digest.update(str(os.stat(BUSYBOX).st_mtime_ns).encode())
    return digest.hexdigest()[:12]


__all__ = ["Machine", "GuestRun", "boot", "unavailable_reason", "KernelUnavailable", "IOMMUS"]
