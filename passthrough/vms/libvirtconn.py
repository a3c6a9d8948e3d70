"""The libvirt daemon as the libvirt backend uses it: one connection, one domain, libvirt's words kept.

libvirt-python is imported only when a domain is read or changed, so the web process and
a host without the binding still import :mod:`passthrough.vms`; without it, or without a
daemon answering, :class:`LibvirtUnavailable` says what to install or start. Every call
goes through :meth:`Handle.call`, which turns a ``libvirtError`` into a
:class:`LibvirtRefused` carrying libvirt's own message unchanged.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict
from typing import Any

from passthrough.ops.errors import VerificationFailed
from passthrough.vms.domainxml import Hostdev, parse_domain
from passthrough.vms.libvirt import KIND, vm_from_xml
from passthrough.vms.model import UnknownVm, Vm, VmError

DEFAULT_URI = "qemu:///system"
UNPLUG_TIMEOUT = 10.0  # seconds for a guest to let a device go (libvirt itself waits 5 for QEMU's DEVICE_DELETED)
# virDomainState -> what virsh says (VIR_DOMAIN_BLOCKED, "idle", is a running domain waiting on I/O).
STATES = {0: "no state", 1: "running", 2: "running", 3: "paused", 4: "in shutdown", 5: "shut off", 6: "crashed",
          7: "pmsuspended"}  # fmt: skip
NOT_INSTALLED = (
    "libvirt-python is not installed in this Python, so libvirt VMs are not read. It builds against the host's "
    "libvirt: apt-get install libvirt-dev pkg-config, then start scripts/run again (it installs "
    "requirements-libvirt.txt when pkg-config finds libvirt)."
)


class LibvirtUnavailable(VmError):
    """libvirt-python is missing, or no daemon answers at the URI."""

    code = "libvirt_unavailable"


class LibvirtRefused(VmError):
    """libvirt refused a call; the message ends with libvirt's own words."""

    code = "libvirt_refused"


def module() -> Any:
    try:
        import libvirt
    except ImportError:
        raise LibvirtUnavailable(NOT_INSTALLED) from None
    # Without a handler of its own, libvirt prints every error on stderr as well as raising it.
    libvirt.registerErrorHandler(lambda _context, _error: None, None)
    return libvirt


def _words(error: Exception) -> str:
    return str(error).strip() or type(error).__name__


def require_uri(uri: str | None) -> str:
    if uri is None:
        raise VmError("libvirt is not read or changed on a tree that is not the live host.",
                      hint="Run it on the host itself (its worker), where the libvirt URI is qemu:///system.")  # fmt: skip
    return uri


@contextmanager
def connection(uri: str, *, read_only: bool = False) -> Iterator[Any]:
    lv = module()
    try:
        conn = lv.openReadOnly(uri) if read_only else lv.open(uri)
    except lv.libvirtError as error:
        raise LibvirtUnavailable(
            f"libvirt at {uri} does not answer: {_words(error)}",
            hint="Start the daemon (systemctl start libvirtd, or libvirtd -d and virtlogd -d where PID 1 is not "
            "systemd); changing domains needs root.",
        ) from None
    try:
        yield conn
    finally:
        with suppress(lv.libvirtError):
            conn.close()


def version(conn: Any) -> str:
    number = conn.getLibVersion()
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def call(doing: str, function: Callable[..., Any], *arguments: Any) -> Any:
    """``function(*arguments)``, with a libvirt error as :class:`LibvirtRefused` (or :class:`UnknownVm` for a
    domain that is gone) in libvirt's own words."""
    lv = module()
    try:
        return function(*arguments)
    except lv.libvirtError as error:
        if error.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
            raise UnknownVm(f"The domain is gone ({doing}): {_words(error)}") from None
        raise LibvirtRefused(f"libvirt refused {doing}: {_words(error)}") from None


class Handle:
    """One domain on one connection."""

    def __init__(self, conn: Any, domain: Any) -> None:
        self.lv = module()
        self.conn = conn
        self.domain = domain

    @classmethod
    def find(cls, conn: Any, *, name: str | None = None, uuid: str | None = None) -> Handle:
        lv = module()
        try:
            domain = conn.lookupByUUIDString(uuid) if uuid else conn.lookupByName(name)
        except lv.libvirtError as error:
            if error.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                raise UnknownVm(f"There is no libvirt domain {name or uuid!r} (any more): {_words(error)}",
                                hint="`manage.py vm list` shows the domains there are.") from None  # fmt: skip
            raise LibvirtRefused(f"libvirt could not look up the domain {name or uuid!r}: {_words(error)}") from None
        return cls(conn, domain)

    @property
    def name(self) -> str:
        return str(self.domain.name())

    @property
    def ref(self) -> str:
        return f"{KIND}:{self.name}"

    def call(self, doing: str, function: Callable[..., Any], *arguments: Any) -> Any:
        return call(doing, function, *arguments)

    def inactive(self) -> str:
        """The saved configuration (what the next start uses), as ``virsh dumpxml --inactive`` shows it."""
        return str(self.call("reading the domain XML", self.domain.XMLDesc, self.lv.VIR_DOMAIN_XML_INACTIVE))

    def secure(self) -> str:
        """The saved configuration with its secrets (graphics passwords): what putting it back must define.

        Kept in memory for a rollback only; never shown, stored or diffed."""
        flags = self.lv.VIR_DOMAIN_XML_INACTIVE | self.lv.VIR_DOMAIN_XML_SECURE
        return str(self.call("reading the domain XML", self.domain.XMLDesc, flags))

    def live(self) -> str | None:
        if not self.call("asking whether the domain runs", self.domain.isActive):
            return None
        return str(self.call("reading the running domain's XML", self.domain.XMLDesc, 0))

    def state(self) -> str:
        code = self.call("reading the domain's state", self.domain.state)[0]
        return STATES.get(code, f"state {code}")

    def vm(self) -> Vm:
        autostart = self.call("reading autostart", self.domain.autostart)
        return vm_from_xml(self.inactive(), self.state(), live=self.live(), detail="autostart" if autostart else "")

    def define(self, text: str, doing: str) -> None:
        self.call(doing, self.conn.defineXML, text)

    def attach(self, xml: str, flags: int, doing: str) -> None:
        self.call(doing, self.domain.attachDeviceFlags, xml, flags)

    def detach(self, xml: str, flags: int, doing: str) -> None:
        self.call(doing, self.domain.detachDeviceFlags, xml, flags)

    def query_pci(self) -> dict[str, Any]:
        import json

        import libvirt_qemu

        reply = self.call("QMP query-pci", libvirt_qemu.qemuMonitorCommand, self.domain, '{"execute":"query-pci"}', 0)
        parsed: dict[str, Any] = json.loads(reply)
        return parsed


def match_xml(held: Hostdev) -> str:
    """A hostdev as libvirt matches it for a detach: by its host function."""
    domain, bus, rest = held.host.split(":")
    slot, function = rest.split(".")
    return (f"<hostdev mode='subsystem' type='pci' managed='{'yes' if held.managed else 'no'}'><source>"
            f"<address domain='0x{domain}' bus='0x{bus}' slot='0x{slot}' function='0x{function}'/></source></hostdev>")  # fmt: skip


def unplug(handle: Handle, address: str, timeout: float = UNPLUG_TIMEOUT) -> None:
    """Take ``address`` out of the running domain and wait until its live XML no longer lists it."""
    held = parse_domain(handle.live() or "<domain><devices/></domain>").hostdev(address)
    if held is None:
        return
    handle.detach(match_xml(held), handle.lv.VIR_DOMAIN_AFFECT_LIVE, f"unplugging {address} from {handle.ref}")
    if not wait_for(
        lambda: parse_domain(handle.live() or "<domain><devices/></domain>").hostdev(address) is None, timeout
    ):
        raise VerificationFailed(f"{address} is still in the running domain {timeout:.0f} s after the unplug: the "
                                 "guest has not let it go (it goes when the VM stops).")  # fmt: skip


def state_of(vm: Vm) -> dict[str, Any]:
    return {"vm": vm.ref, "state": vm.state, "devices": [asdict(device) for device in vm.devices],
            "fingerprint": vm.fingerprint}  # fmt: skip


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """``condition()``'s first true value, or its last false one once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def with_secrets(inactive: str, secure: str, target: str) -> str | None:
    """``target`` with the secrets ``secure`` holds beside ``inactive`` (the same XML without them).

    The lines ``target`` shares with ``inactive`` are taken from ``secure``, so a graphics
    password survives putting the configuration back; None when the two do not line up."""
    if inactive == secure:
        return target
    plain, secret, wanted = (text.splitlines(keepends=True) for text in (inactive, secure, target))
    if len(plain) != len(secret):
        return None
    out: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, plain, wanted, autojunk=False).get_opcodes():
        out += secret[i1:i2] if tag == "equal" else wanted[j1:j2]
    return "".join(out)
