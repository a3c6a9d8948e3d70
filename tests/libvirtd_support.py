"""A real libvirtd for the tests, and throwaway domains in it.

A test module takes the fixtures by importing them: ``from tests.libvirtd_support import
connection_fixture, domains_fixture, libvirt_uri_fixture`` (their names for pytest are
``connection``, ``domains`` and ``libvirt_uri``).

``libvirt_uri`` (session-scoped) answers with the URI of a daemon that answers: the one
running already, or one it starts itself (``virtlogd -d`` and ``libvirtd -d`` with pid
files of its own, as PID 1 is not systemd here), waiting for the first answer (libvirt
probes QEMU first, about 8 s) with a timeout. It stops only the daemons it started, and
only when no other test session still uses them (each session holds a shared lock on
``USERS_LOCK`` while it runs). It skips, saying why, when not root or when libvirtd,
virsh or libvirt-python is missing.

On a host without udev, ``/dev/kvm`` stays ``0600 root:root``, which libvirt's QEMU user
cannot open while the probe (run as root) used KVM: libvirt then throws its QEMU
capabilities away and probes again on every call (about 16 s each). When it starts the
daemon on such a host, the fixture gives ``/dev/kvm`` the group and mode udev's rule gives
it (``kvm``, ``0660``) and puts them back when it stops the daemon.

``domains`` defines uniquely named TCG q35 domains without disks (they start in about half
a second) and at the end destroys and undefines those, and only those, by UUID.
"""

from __future__ import annotations

import fcntl
import grp
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

URI = "qemu:///system"
START_LOCK = Path(tempfile.gettempdir()) / "passthrough-tests-libvirtd.start.lock"
USERS_LOCK = Path(tempfile.gettempdir()) / "passthrough-tests-libvirtd.users.lock"
FIRST_ANSWER_TIMEOUT = 90.0  # seconds: the first connection waits for libvirt's QEMU probe
KVM = Path("/dev/kvm")
VIRTLOGD_SOCKET = "/run/libvirt/virtlogd-sock"
QEMU_USER_GROUP = "kvm"  # Debian's libvirt-qemu user is in it; udev gives /dev/kvm to it, mode 0660


def answers(timeout: float = 5.0) -> bool:
    try:
        done = subprocess.run(["virsh", "-c", URI, "list", "--name"], capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "libvirtd tests need root (qemu:///system, starting libvirtd)"
    missing = [tool for tool in ("libvirtd", "virtlogd", "virsh") if shutil.which(tool) is None]
    if missing:
        return (
            f"{', '.join(missing)} missing: apt-get install libvirt-daemon-system libvirt-clients (scripts/test does)"
        )
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed in .venv: scripts/test installs requirements-libvirt.txt"
    return None


def _kvm_blocks_qemu_user() -> bool:
    """True when /dev/kvm exists but only root may open it (no udev gave it to group kvm)."""
    if not KVM.exists():
        return False
    info = KVM.stat()
    try:
        kvm_gid = grp.getgrnam(QEMU_USER_GROUP).gr_gid
    except KeyError:
        return False
    return not (info.st_mode & 0o006 == 0o006 or (info.st_gid == kvm_gid and info.st_mode & 0o060 == 0o060))


class Daemons:
    """The virtlogd and libvirtd this session started (none when one was running)."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="passthrough-libvirtd-"))
        self.pid_files: list[Path] = []
        self.kvm_before: tuple[int, int, int] | None = None  # (mode, uid, gid) to put back

    def start(self) -> None:
        if _kvm_blocks_qemu_user():
            info = KVM.stat()
            self.kvm_before = (info.st_mode & 0o7777, info.st_uid, info.st_gid)
            os.chown(KVM, 0, grp.getgrnam(QEMU_USER_GROUP).gr_gid)
            os.chmod(KVM, 0o660)
        if not _listening(VIRTLOGD_SOCKET):  # without virtlogd, a domain cannot start
            self._run("virtlogd")
        self._run("libvirtd")
        if not wait_until(answers, FIRST_ANSWER_TIMEOUT, interval=0.5):
            self.stop()
            pytest.fail(
                f"libvirtd started but `virsh -c {URI} list` did not answer within {FIRST_ANSWER_TIMEOUT:.0f} s"
            )

    def _run(self, daemon: str) -> None:
        pid_file = self.directory / f"{daemon}.pid"
        subprocess.run([daemon, "-d", "--pid-file", str(pid_file)], check=True, timeout=30)
        if not wait_until(pid_file.exists, 10):
            pytest.fail(f"{daemon} -d wrote no pid file")
        self.pid_files.append(pid_file)

    def stop(self) -> None:
        for pid_file in reversed(self.pid_files):  # libvirtd before virtlogd
            pid = int(pid_file.read_text().strip())
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                continue
            wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 30)
        if self.kvm_before is not None:
            mode, uid, gid = self.kvm_before
            os.chown(KVM, uid, gid)
            os.chmod(KVM, mode)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session", name="libvirt_uri")
def libvirt_uri_fixture() -> Iterator[str]:
    why = _why_not()
    if why:
        pytest.skip(why)
    users = open(USERS_LOCK, "a")  # noqa: SIM115 (held for the whole session)
    started: Daemons | None = None
    with open(START_LOCK, "a") as start_lock:
        fcntl.flock(start_lock, fcntl.LOCK_EX)  # one session at a time decides whether to start it
        if not answers():
            started = Daemons()
            started.start()
        fcntl.flock(users, fcntl.LOCK_SH)
    try:
        yield URI
    finally:
        fcntl.flock(users, fcntl.LOCK_UN)
        if started is not None:
            with open(START_LOCK, "a") as start_lock:
                fcntl.flock(start_lock, fcntl.LOCK_EX)
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    print(f"\nlibvirtd left running: another test session still uses it ({started.directory})")
                else:
                    started.stop()
        users.close()


def domain_xml(name: str, *, machine: str = "q35", extra: str = "") -> str:
    """A TCG domain without disks: it starts in about half a second and boots nothing."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='{machine}'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {extra}
  </devices>
</domain>
"""


@pytest.fixture(name="connection")
def connection_fixture(libvirt_uri: str) -> Iterator[Any]:
    import libvirt

    conn = libvirt.open(libvirt_uri)
    yield conn
    conn.close()


class Domains:
    """The domains one test made (or had the code under test make), undefined at its end by UUID."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.made: list[str] = []

    def define(self, label: str = "vm", *, machine: str = "q35", extra: str = "") -> Any:
        name = f"pw-test-{label}-{uuid.uuid4().hex[:8]}"
        domain = self.connection.defineXML(domain_xml(name, machine=machine, extra=extra))
        self.track(domain.UUIDString())
        return domain

    def track(self, domain_uuid: str) -> None:
        self.made.append(domain_uuid)

    def remove_all(self) -> None:
        import libvirt

        for domain_uuid in self.made:
            try:
                domain = self.connection.lookupByUUIDString(domain_uuid)
            except libvirt.libvirtError:
                continue  # the test undefined it itself
            if domain.isActive():
                domain.destroy()
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)


@pytest.fixture(name="domains")
def domains_fixture(connection: Any) -> Iterator[Domains]:
    made = Domains(connection)
    yield made
    made.remove_all()
