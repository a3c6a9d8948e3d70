"""Finding QEMU processes and their QMP sockets, and one QMP session: what QEMU holds, (un)plugging.

QEMU serves one client per QMP monitor at a time: a socket another client holds accepts the
connection and never greets. ``info qtree`` shows what sits on every bus, so it says which
hot-pluggable ports are empty even before the firmware ran; ``query-pci`` gives guest
addresses and ids, but only on buses the firmware (or the guest OS) has numbered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from qemu.qmp import EventListener, QMPClient
from qemu.qmp.protocol import ConnectError
from qemu.qmp.qmp_client import ExecuteError

from passthrough.host import HostTree
from passthrough.ops.errors import VerificationFailed
from passthrough.ops.result import Recorder
from passthrough.pci.model import PciFunction
from passthrough.vms.model import VmError

# PCIe ports a card can be hot-plugged into (q35: one slot each), and the bridge that takes
# hot-plugged cards on i440fx (ACPI hot-plug, or its own SHPC): slots 1 to 31.
ROOT_PORTS = ("pcie-root-port", "ioh3420", "xio3130-downstream")
BRIDGES = ("pci-bridge",)
SLOTS = range(1, 32)
CONNECT_FAILURES: dict[type[BaseException], str] = {
    FileNotFoundError: "there is no such socket",
    ConnectionRefusedError: "nothing listens on it (its QEMU has exited)",
    PermissionError: "not permitted (the worker must run as root)",
}


class MonitorUnavailable(VmError):
    code = "qmp_unavailable"  # no such socket, nothing listening, or no answer in time


class QemuRefused(VmError):
    """QEMU answered a command with an error; the message carries QEMU's own words."""

    code = "qemu_refused"


# info qtree ----------------------------------------------------------------------------
@dataclass
class Node:
    kind: str  # "dev" (name: its driver) or "bus" (name: the bus's)
    name: str
    id: str = ""
    props: dict[str, str] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)


_DEV = re.compile(r'^dev: ([^,]+), id "(.*)"$')
_PROP = re.compile(r"^([A-Za-z0-9_.-]+) = (.*)$")


def parse_qtree(text: str) -> list[Node]:
    """The device tree ``info qtree`` prints, by indentation: devices hold buses, buses hold devices."""
    roots: list[Node] = []
    stack: list[tuple[int, Node]] = []
    for line in text.splitlines():
        stripped, indent = line.strip(), len(line) - len(line.lstrip(" "))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        found = _DEV.match(stripped)
        node = (
            Node("dev", found[1], found[2]) if found else Node("bus", stripped[5:]) if stripped[:5] == "bus: " else None
        )
        if node is None:
            prop = _PROP.match(stripped)
            if prop and stack:
                stack[-1][1].props[prop[1]] = prop[2].strip('"')
            continue
        (stack[-1][1].children if stack else roots).append(node)
        stack.append((indent, node))
    return roots


def _walk(nodes: list[Node]) -> list[Node]:
    return [found for node in nodes for found in (node, *_walk(node.children))]


@dataclass
class Occupant:
    id: str  # "" when it has none
    driver: str
    slot: int
    function: int

    @classmethod
    def of(cls, node: Node) -> Occupant:
        addr = re.fullmatch(r"([0-9a-f]{1,2})\.([0-7])", node.props.get("addr", ""))
        return cls(node.id, node.name, int(addr[1], 16) if addr else 0, int(addr[2]) if addr else 0)


@dataclass
class Port:
    """Where a card can be hot-plugged: a PCIe root port (one slot) or a PCI bridge (many)."""

    bus: str  # the bus name device_add takes
    driver: str
    hotplug: bool
    occupants: list[Occupant]

    @property
    def free_slots(self) -> list[int]:
        if not self.hotplug:
            return []
        if self.driver in ROOT_PORTS:
            return [] if self.occupants else [0]
        return [slot for slot in SLOTS if slot not in {occupant.slot for occupant in self.occupants}]

    @property
    def free(self) -> bool:
        return bool(self.free_slots)


def ports_of(tree: list[Node]) -> list[Port]:
    nodes = _walk(tree)
    # i440fx's power management function does ACPI hot-plug, onto bridges too when this is on.
    acpi_bridges = any(node.props.get("acpi-pci-hotplug-with-bridge-support") == "true" for node in nodes)
    ports = []
    for node in nodes:
        bus = next((child for child in node.children if child.kind == "bus"), None)
        if node.kind != "dev" or node.name not in ROOT_PORTS + BRIDGES or bus is None:
            continue
        bridge_hotplug = acpi_bridges or node.props.get("shpc") == "true"
        hotplug = node.props.get("hotplug", "true") != "false" if node.name in ROOT_PORTS else bridge_hotplug
        ports.append(Port(bus.name, node.name, hotplug, [Occupant.of(child) for child in bus.children]))
    return ports


# query-pci -----------------------------------------------------------------------------
@dataclass
class SeenFunction:
    qdev_id: str
    guest: str  # 0000:bb:ss.f
    vendor: str  # four lower-case hex digits
    device: str


def flatten_pci(buses: Any) -> list[SeenFunction]:
    seen: list[SeenFunction] = []

    def visit(devices: list[dict[str, Any]]) -> None:
        for found in devices:
            guest = f"0000:{found['bus']:02x}:{found['slot']:02x}.{found['function']:x}"
            ids = found["id"]
            seen.append(SeenFunction(found.get("qdev_id", ""), guest, f"{ids['vendor']:04x}", f"{ids['device']:04x}"))
            visit(found.get("pci_bridge", {}).get("devices", []))

    for bus in buses or []:
        visit(bus.get("devices", []))
    return seen


# Finding QEMU processes ------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    socket: str
    name: str
    pid: int | None = None


def option_dict(text: str, implied: str) -> dict[str, str]:
    """QEMU's option syntax: ``socket,id=x,,y,server`` -> {implied: socket, id: "x,y", server: on}."""
    values: dict[str, str] = {}
    for index, part in enumerate(piece.replace("\0", ",") for piece in text.replace(",,", "\0").split(",")):
        key, equals, value = part.partition("=")
        if not equals:
            key, value = (implied, part) if index == 0 else (part, "on")  # a bare flag: server, nowait
        values[key] = value
    return values


def command_options(argv: list[str]) -> list[tuple[str, str]]:
    """(-flag, value) pairs of a command line (QEMU takes --flag for -flag)."""
    return [("-" + flag.lstrip("-"), value) for flag, value in zip(argv, argv[1:], strict=False) if flag[:1] == "-"]


def monitor_sockets(argv: list[str], cwd: str | None = None) -> list[str] | None:
    """The QMP server sockets a QEMU command line opens, or None for a VM libvirt runs."""
    options = command_options(argv)
    if any(flag == "-name" and value.startswith("guest=") for flag, value in options):
        return None  # libvirt's: its monitor is passed by fd, and libvirt is its one client
    chardevs, sockets = {}, []
    for flag, value in options:
        settings = option_dict(value, "backend")
        server = settings.get("server", "off") in ("on", "yes", "true")
        if flag in ("-qmp", "-qmp-pretty") and settings.get("backend", "").startswith("unix:") and server:
            sockets.append(settings["backend"][5:])
        elif flag == "-chardev" and settings.get("backend") == "socket" and "path" in settings and server:
            chardevs[settings.get("id", "")] = settings["path"]
    for flag, value in options:
        settings = option_dict(value, "chardev")
        if flag == "-mon" and settings.get("mode") == "control" and settings.get("chardev") in chardevs:
            sockets.append(chardevs[settings["chardev"]])
    return [os.path.normpath(os.path.join(cwd or "/", path)) for path in sockets]


def discover(tree: HostTree) -> list[Found]:
    """Every QMP socket of a plain QEMU process in ``tree``'s proc/, with the process's -name."""
    found = []
    for pid in sorted((name for name in tree.listdir("proc") if name.isdigit()), key=int):
        raw = tree.read_bytes(f"proc/{pid}/cmdline", limit=1 << 20) or b""
        argv = [part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0")]
        if not os.path.basename(argv[0]).startswith("qemu-system-"):
            continue
        name = option_dict(dict(command_options(argv[1:])).get("-name", ""), "guest").get("guest", "")
        for socket in monitor_sockets(argv[1:], tree.readlink(f"proc/{pid}/cwd")) or []:
            found.append(Found(socket, name, int(pid)))
    return found


# The session -----------------------------------------------------------------------------
@dataclass
class Peripheral:  # a vfio-pci device: its id (a QOM path when it has none) and the host function it holds
    id: str
    host: str | None


class Session:
    """One QMP session from synchronous code: ``with Session(path, timeout) as qemu: qemu.run("query-pci")``.

    Each call runs qemu.qmp's event loop only until QEMU answers (within ``timeout``), so none
    runs between calls: the progress a job reports around them writes to Django's ORM,
    which refuses to run inside an event loop."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self.loop = asyncio.new_event_loop()
        self.client = QMPClient("passthrough-wizard")

    def __call__(self, awaitable: Awaitable[Any], timeout: float | None = None) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(awaitable, timeout or self.timeout))

    def __enter__(self) -> Session:
        try:
            self(self.client.connect(self.path))
        except TimeoutError:
            self.__exit__()
            raise MonitorUnavailable(
                f"QEMU did not answer on {self.path} within {self.timeout:g} s.",
                hint="QEMU serves one client per QMP monitor at a time: another client (libvirt, qmp-shell, a "
                "script) may hold it. Close it, or start QEMU with a second -qmp socket for the wizard.",
            ) from None
        except ConnectError as error:
            self.loop.close()
            words = CONNECT_FAILURES.get(type(error.exc), f"{type(error.exc).__name__}: {error.exc}")
            raise MonitorUnavailable(f"Cannot open the QMP socket {self.path}: {words}.") from None
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            with contextlib.suppress(EOFError, OSError):  # QEMU closed the monitor (it quit or died)
                self(self.client.disconnect())
        finally:
            self.loop.close()

    def run(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        try:
            return self(self.client.execute(command, arguments))
        except ExecuteError as error:
            raise QemuRefused(f"QEMU refused {command}: {error}") from None
        except TimeoutError:
            raise MonitorUnavailable(f"QEMU did not answer {command} on {self.path} in {self.timeout:g} s.") from None

    def machine(self) -> str | None:
        """The machine type (pc-q35-7.2, pc-i440fx-7.2), from the /machine object's QOM type."""
        with contextlib.suppress(QemuRefused):
            return str(self.run("qom-get", {"path": "/machine", "property": "type"})).removesuffix("-machine")
        return None

    def peripherals(self) -> list[Peripheral]:
        found = []
        for container in ("/machine/peripheral", "/machine/peripheral-anon"):
            for child in self.run("qom-list", {"path": container}):
                if child["type"] == "child<vfio-pci>":
                    path = f"{container}/{child['name']}"
                    host = self.run("qom-get", {"path": path, "property": "host"})
                    if not host or host == "0000:00:00.0":  # named by sysfsdev= instead
                        sysfsdev = self.run("qom-get", {"path": path, "property": "sysfsdev"})
                        host = str(sysfsdev).rstrip("/").rsplit("/", 1)[-1] if sysfsdev else None
                    found.append(Peripheral(child["name"] if container.endswith("peripheral") else path, host or None))
        return found

    def pci(self) -> list[SeenFunction]:
        return flatten_pci(self.run("query-pci"))

    def ports(self) -> list[Port]:
        return ports_of(parse_qtree(str(self.run("human-monitor-command", {"command-line": "info qtree"}))))

    def wait_listed(self, ids: list[str], timeout: float) -> dict[str, SeenFunction]:
        """query-pci until it lists every id (their bus numbered), for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(listed := {seen.qdev_id: seen for seen in self.pci() if seen.qdev_id in ids}) < len(ids):
            if time.monotonic() > deadline:
                break
            self(asyncio.sleep(0.2))
        return listed


def session(path: str, timeout: float, work: Callable[[Session], Any]) -> Any:
    with Session(path, timeout) as qemu:
        return work(qemu)


# Plugging and unplugging -----------------------------------------------------------------
# (id, host, port bus, slot, function): a vfio-pci device as plugging and unplugging see it
Plugged = tuple[str, str, str, int, int]


def plug(
    recorder: Recorder, commands: list[dict[str, Any]], hosts: dict[str, PciFunction], added: list[Plugged],
    proof: list[dict[str, Any]], proof_timeout: float, qemu: Session,
) -> None:  # fmt: skip
    """device_add each vfio-pci device (``added`` grows as QEMU takes each), then prove the VM sees them."""
    for arguments in commands:
        with recorder.step("device_add", arguments["host"], f"vfio-pci {arguments['id']} on {arguments['bus']}"):
            qemu.run("device_add", arguments)
        slot, function = (int(part, 16) for part in arguments["addr"].split("."))
        added.append((arguments["id"], arguments["host"], arguments["bus"], slot, function))
    with recorder.step("prove", None, "query-pci") as step:
        status = str(qemu.run("query-status")["status"])
        listed = qemu.wait_listed([item[0] for item in added], proof_timeout if status == "running" else 0)
        in_qtree = {occupant.id for port in qemu.ports() for occupant in port.occupants}
        for ident, host, bus, *_ in added:
            card, seen = hosts[host], listed.get(ident)
            entry: dict[str, Any] = {"id": ident, "host": host, "port": bus, "guest": None}
            if seen is not None and (seen.vendor, seen.device) != (card.vendor_id, card.device_id):
                raise VerificationFailed(
                    f"query-pci shows {ident} as {seen.vendor}:{seen.device} at {seen.guest}, "
                    f"but {host} is {card.vendor_id}:{card.device_id}."
                )
            if seen is not None:
                entry |= {"guest": seen.guest, "vendor": seen.vendor, "device": seen.device, "seen_by": "query-pci"}
            elif status == "running" or ident not in in_qtree:
                raise VerificationFailed(
                    f"query-pci does not list {ident} after {proof_timeout:g} s (the VM is {status}): "
                    "the guest's firmware or OS has not numbered the port's bus.",
                    hint="Try again once the guest has booted.",
                )
            else:
                note = f"The VM is {status}: query-pci lists {ident} with its guest address once it runs."
                entry |= {"seen_by": "info qtree", "note": note}
            proof.append(entry)
        step.detail = "; ".join(f"{entry['id']} at {entry['guest'] or entry['port']}" for entry in proof)


async def _deleted(listener: EventListener, ids: set[str], timeout: float) -> set[str]:
    """The ids (or QOM paths) DEVICE_DELETED names within ``timeout``; stops once all of ``ids`` are."""
    deleted: set[str] = set()
    deadline = asyncio.get_running_loop().time() + timeout
    while not ids <= deleted and (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            event = await asyncio.wait_for(listener.get(), left)
        except TimeoutError:
            break
        data: Any = event.get("data", {})
        if event["event"] == "DEVICE_UNPLUG_GUEST_ERROR":
            raise VmError(f"The guest refused to release {data.get('device') or data.get('path')}.")
        deleted |= {str(data.get("device")), str(data.get("path"))}
    return deleted


def unplug(recorder: Recorder, items: list[Plugged], timeout: float, name: str, qemu: Session) -> None:
    """device_del each item and wait for DEVICE_DELETED for every one.

    Per slot only function 0 is asked (the guest's hot-unplug takes the whole slot, and a
    second press of a PCIe slot's attention button within 5 s cancels the first), or each
    function when function 0 is not there (QEMU removes those at once: the guest never saw them)."""
    with_zero = {(bus, slot) for _, _, bus, slot, function in items if bus and function == 0}
    asked = [item for item in items if item[4] == 0 or (item[2], item[3]) not in with_zero]
    ids = {item[0] for item in items}
    listener = EventListener(("DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR"))
    with qemu.client.listen(listener):
        for ident, host, *_ in asked:
            with recorder.step(name, host, f"device_del {ident}"):
                qemu.run("device_del", {"id": ident})
        with recorder.step("wait_deleted", None, f"DEVICE_DELETED for {', '.join(sorted(ids))}") as step:
            deleted = qemu(_deleted(listener, ids, timeout), timeout + 5)
            if not ids <= deleted:
                hosts = ", ".join(f"{host} ({ident})" for ident, host, *_ in items if ident not in deleted)
                raise VmError(
                    f"The guest did not release {hosts} within {timeout:g} s: a guest OS must acknowledge a hot-unplug"
                    " (PCIe native or ACPI), and with no OS running, or one without PCIe/ACPI hot-plug, none comes. The"
                    " request stays pending in QEMU: the device goes when the guest acknowledges it, or QEMU stops.",
                    hint="Check that the guest has booted an OS with PCIe hot-plug, or shut the VM down.",
                )
            step.detail = f"deleted: {', '.join(sorted(ids))}"
