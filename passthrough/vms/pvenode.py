"""What a Proxmox VE node holds: its VMs, read from their configs, ``qm list`` and the running QEMU processes.

A VM's ``config`` devices are those of the config its next start uses (the main section
with ``[PENDING]`` applied); its ``live`` devices are the ``-device vfio-pci,host=…`` of the
QEMU process qemu-server started (``/var/run/qemu-server/<vmid>.pid`` naming a process
whose command line has that pid file, which is qemu-server's own check_running).
"""

from __future__ import annotations

import re
from typing import Any

from passthrough.host import PCI_DEVICES, HostTree
from passthrough.ops.commands import runner_for
from passthrough.vms import pveconf
from passthrough.vms.model import HeldDevice, Vm, VmSource

KIND = "proxmox"
NOT_A_NODE = "not a Proxmox VE node (no /etc/pve/qemu-server)"
NO_HOTPLUG = (
    "qemu-server hot-plugs no hostpci device: a change to a running VM waits in [PENDING] until the VM is "
    "stopped and started again (qm reboot does both; a reboot inside the guest does not)"
)
CONF_DIR = pveconf.CONF_DIR
RUN_DIR = "var/run/qemu-server"
MAPPING_FILE = pveconf.MAPPING_FILE


def read(tree: HostTree, **connection: Any) -> VmSource:
    """Every VM whose config is in ``/etc/pve/qemu-server``, with its state and the functions it holds."""
    if not tree.is_dir(CONF_DIR):
        return VmSource(KIND, False, NOT_A_NODE)
    node = node_name(tree)
    listed = runner_for(tree)(["qm", "list"])
    states = _parse_qm_list(listed.stdout) if listed.ok else {}
    how = "states from `qm list`" if listed.ok else "states from qemu-server's pid files"
    if not listed.ok and not listed.skipped:
        how += f" ({listed.summary})"
    vmids = sorted((name[:-5] for name in tree.listdir(CONF_DIR) if re.fullmatch(r"\d+\.conf", name)), key=int)
    vms = [read_vm(tree, vmid, states.get(vmid)) for vmid in vmids]
    return VmSource(KIND, True, f"Proxmox VE node {node}: {len(vms)} VMs in /{CONF_DIR}; {how}", vms)


def _parse_qm_list(text: str) -> dict[str, str]:
    """``qm list``: VMID NAME STATUS MEM(MB) BOOTDISK(GB) PID; a VM without a name is listed as ``VM <vmid>``."""
    states = {}
    for line in text.splitlines():
        match = re.match(r"^\s*(\d+)\s+.*?\s+(\S+)\s+\S+\s+\S+\s+\d+\s*$", line)
        if match:
            states[match.group(1)] = match.group(2)
    return states


def read_conf(tree: HostTree, vmid: str) -> str | None:
    data = tree.read_bytes(f"{CONF_DIR}/{vmid}.conf", limit=pveconf.MAX_CONF_BYTES)
    return None if data is None else data.decode("utf-8", "replace")


def read_vm(tree: HostTree, vmid: str, listed_state: str | None = None) -> Vm:
    """One VM: its config, its state (``qm list``'s, else qemu-server's pid-file check) and what it holds."""
    argv = qemu_argv(tree, vmid)
    state = listed_state or ("running" if argv is not None else "stopped")
    text = read_conf(tree, vmid)
    if text is None:
        why = f"/{CONF_DIR}/{vmid}.conf could not be read (the worker reads it as root)"
        return Vm(KIND, vmid, f"vm-{vmid}", state, hotplug=NO_HOTPLUG, detail=why)
    conf = pveconf.parse(text)
    notes: list[str] = []
    devices = _held(tree, conf, argv if state in ("running", "paused") else None, notes)
    if state in ("running", "paused") and argv is None:
        notes.append("its QEMU command line could not be read, so what it holds now is not known")
    if conf.main.get("template") == "1":
        notes.append("a template (it is cloned, never started)")
    if conf.main.get("lock"):
        notes.append(f"locked ({conf.main['lock']}): qm set refuses to change it until the lock is gone")
    return Vm(
        kind=KIND,
        id=vmid,
        name=conf.main.get("name") or f"vm-{vmid}",
        state=state,
        machine=pveconf.machine_type(conf.main.get("machine")),
        devices=devices,
        config=text,
        hotplug=NO_HOTPLUG,
        detail="; ".join(notes),
    )


def _held(tree: HostTree, conf: pveconf.PveConf, argv: list[str] | None, notes: list[str]) -> list[HeldDevice]:
    """Functions in the config the next start uses (``config``) and in the running QEMU (``live``)."""
    functions = host_functions(tree)
    mappings = read_mappings(tree, node_name(tree))
    live = {device["host"]: device for device in vfio_devices(argv or [])}
    held: dict[str, HeldDevice] = {}
    for key in conf.hostpci_keys():
        effective, current = conf.effective(key), conf.main.get(key)
        if effective is not None:
            entry = pveconf.hostpci_entry(key, effective, functions, mappings)
            if entry.note:
                notes.append(entry.note)
            for address in entry.functions:
                held.setdefault(address, HeldDevice(address, config=True, alias=key))
        if effective != current:
            notes.append(f"{key} {'changes' if effective and current else 'goes' if current else 'comes'} at the "
                         "next start ([PENDING])")  # fmt: skip
        if current is not None and current != effective:
            for address in pveconf.hostpci_entry(key, current, functions, mappings).functions:
                if address in live:
                    held.setdefault(address, HeldDevice(address, config=False, alias=key))
    for address, device in live.items():
        alias = device.get("id", "").split(".")[0] or None
        found = held.setdefault(address, HeldDevice(address, config=False, alias=alias))
        found.live, found.guest = True, guest_address(device, argv or [])
    return list(held.values())


def host_functions(tree: HostTree) -> list[str]:
    return sorted(tree.listdir(PCI_DEVICES))


def read_mappings(tree: HostTree, node: str) -> dict[str, list[list[str]]] | None:
    """Cluster PCI mappings: name -> this node's alternatives, each a list of paths; None without pci.cfg.

    pci.cfg is a section config: a line with the mapping's name, then indented ``map
    node=…,path=…,id=…`` lines, one per node (several for one node are alternatives).
    """
    text = tree.read(MAPPING_FILE, limit=pveconf.MAX_CONF_BYTES)
    if text is None:
        return None
    mappings: dict[str, list[list[str]]] = {}
    name: str | None = None
    for line in text.splitlines():
        if line.strip() and not line[0].isspace():
            name = line.strip()
            mappings[name] = []
        elif name is not None and line.strip().startswith("map "):
            options = pveconf.property_string(line.strip()[4:], "node")
            if options.get("node") == node and options.get("path"):
                mappings[name].append(options["path"].split(";"))
    return mappings


def node_name(tree: HostTree) -> str:
    """The node's name: from the ``qemu-server`` link pmxcfs makes (``nodes/<node>/qemu-server``), else hostname."""
    target = tree.readlink(CONF_DIR) or ""
    parts = target.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-3] == "nodes" and parts[-1] == "qemu-server":
        return parts[-2]
    hostname = tree.read("etc/hostname")
    return hostname.split(".")[0] if hostname else "localhost"


def qemu_argv(tree: HostTree, vmid: str) -> list[str] | None:
    """The running QEMU's argv when ``<vmid>.pid`` names a live QEMU started with that pid file, as
    qemu-server's check_running decides; None when the VM is not running."""
    pid = (tree.read(f"{RUN_DIR}/{vmid}.pid") or "").strip()
    if not pid.isdigit():
        return None
    raw = tree.read_bytes(f"proc/{pid}/cmdline", limit=1 << 20)
    if not raw:
        return None
    argv = raw.decode("utf-8", "replace").rstrip("\x00").split("\x00")
    program = argv[0].rsplit("/", 1)[-1]
    if not (program.endswith("kvm") or program.startswith("qemu-")):
        return None
    pidfiles = [argv[index + 1] for index, arg in enumerate(argv[:-1]) if arg in ("-pidfile", "--pidfile")]
    return argv if f"/{RUN_DIR}/{vmid}.pid" in pidfiles else None


def vfio_devices(argv: list[str]) -> list[dict[str, str]]:
    """The ``-device vfio-pci,host=…,id=hostpciN[.f],bus=…,addr=…`` options of a QEMU command line."""
    found = []
    for index, arg in enumerate(argv[:-1]):
        if arg == "-device" and argv[index + 1].startswith("vfio-pci,"):
            found.append(pveconf.property_string(argv[index + 1], "driver"))
    return [device for device in found if "host" in device]


def guest_address(device: dict[str, str], argv: list[str]) -> str | None:
    """Where the guest sees it when it sits on the root bus (bus 0), else unknown (a bridge's bus number
    is the firmware's choice). The root bus is ``pcie.0`` on q35, ``pci.0`` on i440fx; on q35 qemu-server's
    ``pci.0`` is a pci-bridge behind the DMI bridge."""
    machines = [argv[index + 1] for index, arg in enumerate(argv[:-1]) if arg == "-machine"]
    machine = pveconf.property_string(machines[-1], "type").get("type", "") if machines else ""
    root = "pcie.0" if "q35" in machine else "pci.0"
    match = re.match(r"^0x([0-9a-f]+)(?:\.([0-7]))?$", device.get("addr", ""))
    if device.get("bus") != root or not match:
        return None
    return f"0000:00:{int(match.group(1), 16):02x}.{match.group(2) or 0}"
