"""A test double of qemu-server's ``qm`` command, acting on a host tree's ``etc/pve/qemu-server``.

No Proxmox VE node runs in CI (pmxcfs, pve-cluster and qemu-server need a whole node), so
the kernel double answers ``qm`` the way qemu-server 9.2 (``PVE::API2::Qemu::update_vm``,
``PVE::QemuServer::parse_vm_config``/``write_vm_config``, ``PVE::AbstractConfig``) does,
for the part the wizard uses:

* ``qm set VMID --hostpciN VALUE ... [--delete a,b]``: every change goes to ``[PENDING]``
  first (removals as ``delete: a,b``); pending values equal to the current ones are
  dropped; then, on a stopped VM, the pending changes are applied to the main section,
  and on a running one they stay pending, because qemu-server hot-plugs no ``hostpci``.
  The whole file is written back as ``write_vm_config`` writes it: ``#`` description lines,
  then every key sorted, then ``[PENDING]``, ``[special:…]`` and the snapshots (kept as
  they were). Deleting a key that is not set warns and goes on, as qm does.
* ``qm list``: the VMs with qm's columns; running means what qemu-server's
  ``check_running`` checks: ``/var/run/qemu-server/<vmid>.pid`` names a live process whose
  command line is a QEMU started with that pid file.

It refuses what qm refuses, with qm's words: a VMID without a config ("Configuration file
'nodes/<node>/qemu-server/<vmid>.conf' does not exist"), a malformed VMID, a locked VM
("VM is locked (backup)"), an option outside hostpci0-15 ("Unknown option: hostpci16"),
and a hostpci value qm's schema rejects. It models nothing else of qm: other options and
subcommands are answered with an exit status of 255 and say that the double lacks them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from passthrough.host import HostTree
from passthrough.ops.commands import CommandResult

CONF_DIR = "etc/pve/qemu-server"
RUN_DIR = "var/run/qemu-server"
MAX_HOSTPCI = 16
_HOSTPCI = re.compile(r"^hostpci(\d+)$")
_KEY_LINE = re.compile(r"^([a-z][a-z_\-]*\d*):\s*(.+?)\s*$")
_PCI_ID = r"(?:[a-f0-9]{4,}:)?[a-f0-9]{2}:[a-f0-9]{2}(?:\.[a-f0-9])?"
_HOST = re.compile(rf"^{_PCI_ID}(?:;{_PCI_ID})*$")
_BOOLEAN = ("0", "1", "on", "off", "yes", "no", "true", "false")
# qemu-server's hostpci format: key -> a check of its value
_HOSTPCI_KEYS: dict[str, Callable[[str], object]] = {
    "host": _HOST.match,
    "mapping": re.compile(r"^[a-z][a-z0-9_\-]+$", re.IGNORECASE).match,
    "rombar": _BOOLEAN.__contains__,
    "pcie": _BOOLEAN.__contains__,
    "x-vga": _BOOLEAN.__contains__,
    "legacy-igd": _BOOLEAN.__contains__,
    "romfile": re.compile(r"^[^,;]+$").match,
    "mdev": re.compile(r"^[^/.:]+$").match,
    "vendor-id": re.compile(r"^0x[0-9a-fA-F]{4}$").match,
    "device-id": re.compile(r"^0x[0-9a-fA-F]{4}$").match,
    "sub-vendor-id": re.compile(r"^0x[0-9a-fA-F]{4}$").match,
    "sub-device-id": re.compile(r"^0x[0-9a-fA-F]{4}$").match,
    "driver": ("vfio", "keep").__contains__,
}


class QmRefused(Exception):
    def __init__(self, message: str, returncode: int = 255) -> None:
        super().__init__(message)
        self.returncode = returncode


class Config:
    """A parsed .conf: description, main values, pending values, and the other sections as text."""

    def __init__(self, text: str) -> None:
        self.description: list[str] = []
        self.main: dict[str, str] = {}
        self.pending: dict[str, str] = {}
        self.rest: list[tuple[str, list[str]]] = []  # [special:…] and snapshots, written back as they were
        section = "main"
        for line in text.split("\n"):
            if not line.strip():
                continue
            if re.match(r"^\[PENDING\]\s*$", line, re.IGNORECASE):
                section = "pending"
            elif re.match(r"^\[[^\]]*\]\s*$", line):
                section = "rest"
                self.rest.append((line.strip(), []))
            elif section == "rest":
                self.rest[-1][1].append(line)
            elif line.startswith("#"):
                if section == "main":
                    self.description.append(line)
            elif match := _KEY_LINE.match(line):
                (self.main if section == "main" else self.pending)[match.group(1)] = match.group(2)

    def text(self) -> str:
        while self.description and self.description[-1].strip() == "#":
            self.description.pop()  # parse_vm_config strips the description's trailing whitespace
        out = [*self.description, *(f"{key}: {self.main[key]}" for key in sorted(self.main))]
        if self.pending:
            out += ["", "[PENDING]", *(f"{key}: {self.pending[key]}" for key in sorted(self.pending))]
        for header, lines in sorted(self.rest, key=lambda item: (not item[0].startswith("[special:"), item[0])):
            out += ["", header, *lines]
        return "\n".join(out) + "\n"

    # PVE::AbstractConfig's pending-delete bookkeeping
    def deletes(self) -> dict[str, bool]:
        value = self.pending.get("delete", "")
        entries = [entry for entry in re.split(r"[,;\s]+", value) if entry.lstrip("!")]
        return {entry.lstrip("!"): entry.startswith("!") for entry in entries}

    def set_deletes(self, deletes: dict[str, bool]) -> None:
        if deletes:
            self.pending["delete"] = ",".join(("!" if deletes[key] else "") + key for key in sorted(deletes))
        else:
            self.pending.pop("delete", None)

    def cleanup_pending(self) -> None:
        for key in [key for key in self.pending if key != "delete"]:
            if self.main.get(key) == self.pending[key]:
                del self.pending[key]
        self.set_deletes({key: force for key, force in self.deletes().items() if key in self.main})


def answer(tree: HostTree, argv: list[str]) -> CommandResult:
    """What ``qm`` prints and exits with for ``argv`` on this tree."""
    try:
        if argv[1:2] == ["list"]:
            return CommandResult(argv, 0, _list(tree), "")
        if argv[1:2] == ["set"]:
            stdout, stderr = _set(tree, argv[2:])
            return CommandResult(argv, 0, stdout, stderr)
        raise QmRefused(f"the qm double answers only `qm set` and `qm list`, not {' '.join(argv[1:2]) or 'nothing'}")
    except QmRefused as refused:
        return CommandResult(argv, refused.returncode, "", f"{refused}\n")


def node_name(tree: HostTree) -> str:
    target = tree.readlink(CONF_DIR) or ""
    parts = target.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-3] == "nodes":
        return parts[-2]
    hostname = tree.read("etc/hostname")
    return hostname.split(".")[0] if hostname else "localhost"


def running(tree: HostTree, vmid: str) -> int | None:
    """The pid of the VM's QEMU, when qemu-server's check_running would find one."""
    pid = (tree.read(f"{RUN_DIR}/{vmid}.pid") or "").strip()
    raw = tree.read_bytes(f"proc/{pid}/cmdline", limit=1 << 20) if pid.isdigit() else None
    if not raw:
        return None
    args = raw.decode("utf-8", "replace").rstrip("\x00").split("\x00")
    program = os.path.basename(args[0])
    if not (program.endswith("kvm") or program.startswith("qemu-")):
        return None
    pidfile = f"/{RUN_DIR}/{vmid}.pid"
    return int(pid) if any(args[i] == "-pidfile" and args[i + 1] == pidfile for i in range(len(args) - 1)) else None


def _list(tree: HostTree) -> str:
    vmids = sorted((name[:-5] for name in tree.listdir(CONF_DIR) if re.fullmatch(r"\d+\.conf", name)), key=int)
    if not vmids:
        return ""
    rows = [f"{'VMID':>10} {'NAME':<20} {'STATUS':<10} {'MEM(MB)':<10} {'BOOTDISK(GB)':>12} {'PID':<10}"]
    for vmid in vmids:
        conf = Config(tree.read(f"{CONF_DIR}/{vmid}.conf", limit=1 << 20) or "")
        pid = running(tree, vmid)
        memory = conf.main.get("memory", "512").split(",")[0].replace("current=", "")
        name, status = conf.main.get("name", f"VM {vmid}"), "running" if pid else "stopped"
        rows.append(f"{vmid:>10} {name:<20} {status:<10} {memory:<10} {0:>12.2f} {pid or 0:<10}")
    return "\n".join(rows) + "\n"


def _options(args: list[str]) -> tuple[str, dict[str, str], list[str]]:
    if not args or args[0].startswith("-"):
        raise QmRefused("400 not enough arguments\nqm set <vmid> [OPTIONS]")
    vmid, settings, deletes = args[0], {}, []
    rest = args[1:]
    while rest:
        option = rest.pop(0)
        if not option.startswith("-"):
            raise QmRefused(f"400 too many arguments\nqm set <vmid> [OPTIONS] (unexpected {option!r})")
        name, _, inline = option.lstrip("-").partition("=")
        if not inline and not rest:
            raise QmRefused(f"400 Parameter verification failed.\n{name}: missing value")
        value = inline or rest.pop(0)
        if name == "delete":
            deletes += [key for key in re.split(r"[,;\s]+", value) if key]
        elif _HOSTPCI.match(name) and int(name[7:]) < MAX_HOSTPCI:
            settings[name] = value
        elif _HOSTPCI.match(name):
            raise QmRefused(f"Unknown option: {name}\n400 unable to parse option")
        else:
            raise QmRefused(f"the qm double models only hostpci0-{MAX_HOSTPCI - 1} and delete, not --{name}")
    if not re.fullmatch(r"[1-9][0-9]{2,8}", vmid):
        raise QmRefused(
            "400 Parameter verification failed.\nvmid: invalid format - value does not look like a valid VM ID"
        )
    for key, value in settings.items():
        _check_hostpci(key, value)
    for key in deletes:
        if not _HOSTPCI.match(key.lstrip("!")):
            raise QmRefused(f"the qm double models deleting hostpciN only, not {key}")
    return vmid, settings, deletes


def _check_hostpci(key: str, value: str) -> None:
    seen: dict[str, str] = {}
    for item in value.split(","):
        name, equals, given = item.partition("=")
        name, given = (name, given) if equals else ("host", item)
        check = _HOSTPCI_KEYS.get(name)
        if check is None:
            raise QmRefused(f"400 Parameter verification failed.\n{key}: invalid format - format error\n"
                            f"{key}.{name}: property is not defined in schema and the schema does not allow "
                            "additional properties")  # fmt: skip
        if not check(given):
            raise QmRefused(f"400 Parameter verification failed.\n{key}: invalid format - format error\n"
                            f"{key}.{name}: value does not match the regex pattern")  # fmt: skip
        seen[name] = given
    if ("host" in seen) == ("mapping" in seen):
        raise QmRefused(f"400 Parameter verification failed.\n{key}: Either 'host' or 'mapping' must be set.")


def _set(tree: HostTree, args: list[str]) -> tuple[str, str]:
    vmid, settings, deletes = _options(args)
    path = f"{CONF_DIR}/{vmid}.conf"
    text = tree.read_bytes(path, limit=1 << 21)
    if text is None:
        raise QmRefused(f"Configuration file 'nodes/{node_name(tree)}/qemu-server/{vmid}.conf' does not exist")
    original = text.decode("utf-8", "replace")
    conf = Config(original)
    if conf.main.get("lock"):
        raise QmRefused(f"VM is locked ({conf.main['lock']})")
    shown = " ".join([*(f"-{key} {value}" for key, value in settings.items()),
                      *([f"-delete {','.join(deletes)}"] if deletes else [])])  # fmt: skip
    warnings = []
    for entry in deletes:
        key, force = entry.lstrip("!"), entry.startswith("!")
        if key not in conf.main and key not in conf.pending:
            warnings.append(f"cannot delete '{key}' - not set in current configuration!")
            continue
        conf.pending.pop(key, None)
        conf.set_deletes({**conf.deletes(), key: force})
    for key, value in settings.items():
        if conf.pending.get(key) == value:
            continue
        conf.pending[key] = value
        conf.set_deletes({name: force for name, force in conf.deletes().items() if name != key})
    conf.cleanup_pending()
    if running(tree, vmid) is None:  # vmconfig_apply_pending: a stopped VM takes the changes now
        for key in conf.deletes():
            conf.main.pop(key, None)
        conf.pending.pop("delete", None)
        for key in [key for key in conf.pending]:
            conf.main[key] = conf.pending.pop(key)
    if conf.text() != Config(original).text():  # qm writes only when something changed
        _write(tree, path, conf.text())
    return f"update VM {vmid}: {shown}\n", "".join(f"{warning}\n" for warning in warnings)


def _write(tree: HostTree, path: str, text: str) -> None:
    target = tree.path(path)
    temporary = f"{target}.tmp.{os.getpid()}"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, target)
