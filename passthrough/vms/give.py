"""The operations the worker and the shell run on VMs, whatever their kind.

Each reads the host's VMs afresh (:func:`read_vms`), finds the one the reference names,
and hands over to that kind's backend: :mod:`passthrough.vms.libvirtd`,
:mod:`passthrough.vms.proxmox` or :mod:`passthrough.vms.qmp`. Every backend follows the
shape of :mod:`passthrough.ops`: validate (:func:`passthrough.vms.validate.prepare`), act,
verify, prove, and on any failure put the VM back as it was.

``Connection`` says where to look: the libvirt URI (None: libvirt is not read, as on a
captured tree) and QMP sockets given by the user besides those found in ``/proc``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from passthrough.host import HostTree
from passthrough.ops.errors import InvalidRequest
from passthrough.ops.result import OperationResult, Progress
from passthrough.vms.model import KINDS, Vm, VmInventory, VmSource
from passthrough.vms.validate import Prepared, parse_addresses, require_not_held, require_passable

# kind -> the module that reads and changes VMs of that kind
BACKENDS = {"libvirt": "passthrough.vms.libvirtd", "proxmox": "passthrough.vms.proxmox", "qemu": "passthrough.vms.qmp"}
UNDOABLE = ("vm_attach", "vm_detach", "vm_define")


@dataclass(frozen=True)
class Connection:
    libvirt_uri: str | None = None
    qmp_sockets: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def for_tree(cls, tree: HostTree, libvirt_uri: str | None = "", qmp_sockets: tuple[str, ...] = ()) -> Connection:
        """``libvirt_uri`` "" means the default: qemu:///system on the live host, none on any other tree."""
        uri = libvirt_uri if libvirt_uri != "" else ("qemu:///system" if tree.is_live else None)
        return cls(libvirt_uri=uri, qmp_sockets=tuple(qmp_sockets))

    def arguments(self, kind: str) -> dict[str, Any]:
        if kind == "libvirt":
            return {"uri": self.libvirt_uri}
        if kind == "qemu":
            return {"sockets": list(self.qmp_sockets)}
        return {}


def backend(kind: str) -> ModuleType:
    if kind not in BACKENDS:
        raise InvalidRequest(f"{kind!r} is not a kind of VM the wizard knows ({', '.join(KINDS)}).")
    return importlib.import_module(BACKENDS[kind])


def read_source(tree: HostTree, kind: str, connection: Connection) -> VmSource:
    if kind == "libvirt" and connection.libvirt_uri is None:
        return VmSource("libvirt", False, "libvirt is not read on a tree that is not the live host.")
    try:
        module = backend(kind)
    except ImportError as error:  # a backend that cannot load here must not hide the others
        return VmSource(kind, False, f"Not available: {error}.")
    source: VmSource = module.read(tree, **connection.arguments(kind))
    return source


def read_vms(tree: HostTree, connection: Connection) -> VmInventory:
    """Every VM on the host, by kind; a kind that cannot be read says why instead."""
    return VmInventory(sources=[read_source(tree, kind, connection) for kind in KINDS])


def _kind_of(vms: VmInventory, reference: Any) -> str:
    if not isinstance(reference, str):
        raise InvalidRequest("Name the VM: a libvirt domain, a Proxmox VMID or qemu:<QMP socket path>.")
    return vms.find(reference).kind


def attach(
    tree: HostTree,
    reference: Any,
    addresses: Any,
    *,
    connection: Connection,
    live: bool | None = None,
    confirm: str | None = None,
    fingerprint: str | None = None,
    primary_gpu: bool = False,
    rom_file: str | None = None,
    progress: Progress | None = None,
) -> OperationResult:
    """Give the VM ``reference`` names the functions at ``addresses`` (and what must go with them).

    ``primary_gpu``: the card is the VM's only display (x-vga where the backend writes it;
    never hot-plugged). ``rom_file``: a VBIOS image the VM gets as the card's option ROM,
    checked on the host by :func:`passthrough.vms.romfile.require_rom_file`. A plain QEMU VM
    takes neither: its devices are hot-plugged, and a ROM is given on its command line."""
    vms = read_vms(tree, connection)
    kind = _kind_of(vms, reference)
    refuse_options(kind, primary_gpu=primary_gpu, rom_file=rom_file)
    options: dict[str, Any] = {"primary_gpu": primary_gpu} | ({} if rom_file is None else {"rom_file": rom_file})
    result: OperationResult = backend(kind).attach(
        tree, vms, reference, addresses, live=live, confirm=confirm, fingerprint=fingerprint, progress=progress,
        **options, **connection.arguments(kind),
    )  # fmt: skip
    return result


def refuse_options(kind: str, *, primary_gpu: Any = False, rom_file: Any = None) -> None:
    """Refuse the attach options a kind of VM cannot take, before anything is read or changed (the page says it too)."""
    if kind != "qemu":
        return
    if primary_gpu:
        raise InvalidRequest(
            "A primary GPU (x-vga) cannot be hot-plugged: QEMU sets up the legacy VGA ranges only for a device "
            "present when the machine starts, and a plain QEMU VM takes devices only by hot-plug.",
            hint="Put it on QEMU's command line (manage.py vmconfig --target qemu --primary-gpu writes it) and start "
            "the VM.",
        )
    if rom_file is not None:
        raise InvalidRequest(
            "A ROM file is not given to a plain QEMU VM here: the wizard hot-plugs its devices through the monitor, "
            "each with the card's own ROM.",
            hint="Put romfile= on QEMU's command line (manage.py vmconfig --target qemu --rom-file PATH writes it) "
            "and start the VM.",
        )


def detach(
    tree: HostTree,
    reference: Any,
    addresses: Any,
    *,
    connection: Connection,
    live: bool | None = None,
    progress: Progress | None = None,
) -> OperationResult:
    vms = read_vms(tree, connection)
    kind = _kind_of(vms, reference)
    result: OperationResult = backend(kind).detach(
        tree, vms, reference, addresses, live=live, progress=progress, **connection.arguments(kind)
    )
    return result


def undo(
    tree: HostTree, record: Any, *, connection: Connection, force: bool = False, progress: Progress | None = None
) -> OperationResult:
    """Undo what an attach, detach or define job did, from the record its result kept."""
    if not isinstance(record, dict) or record.get("action") not in UNDOABLE or record.get("kind") not in BACKENDS:
        raise InvalidRequest("This is not the undo record of a VM change.", hint="Use the record its job returned.")
    kind = record["kind"]
    result: OperationResult = backend(kind).undo(
        tree, record, force=force, progress=progress, **connection.arguments(kind)
    )
    return result


def define(tree: HostTree, xml: str, *, connection: Connection, progress: Progress | None = None) -> OperationResult:
    """A new libvirt domain from a generated configuration ("new VM from this config")."""
    if connection.libvirt_uri is None:
        raise InvalidRequest("libvirt is not read on this tree, so no domain can be defined in it.")
    result: OperationResult = backend("libvirt").define_domain(tree, xml, progress=progress, uri=connection.libvirt_uri)
    return result


def define_with(
    tree: HostTree,
    addresses: Any,
    *,
    name: str,
    memory_mib: int,
    vcpus: int,
    connection: Connection,
    progress: Progress | None = None,
) -> OperationResult:
    """A new libvirt domain with ``addresses`` (and what must go with them), from the generated XML.

    The devices pass the checks of an attach (the interlock, a function another VM holds)
    before the XML is made from the live host."""
    from passthrough.configgen import build_spec, generate
    from passthrough.ops.interlock import GIVE_TO_VM, check_action
    from passthrough.pci.scan import scan

    picked = parse_addresses(addresses)
    inventory = scan(tree)
    for address in picked:
        require_passable(inventory, inventory.require(address))
    spec = build_spec(inventory, picked, name=name, memory_mib=memory_mib, vcpus=vcpus, tree=tree)
    everything = [device.address for device in spec.devices]
    check_action(inventory, GIVE_TO_VM, everything, None)
    vms = read_vms(tree, connection)
    for address in everything:
        require_not_held(inventory, vms, address, besides=None)
    return define(tree, generate(inventory, spec, "libvirt").text, connection=connection, progress=progress)


# Kinds whose configuration is text the wizard can show a diff of before it changes anything.
PLANNERS = {"libvirt": "passthrough.vms.libvirt", "proxmox": "passthrough.vms.proxmox"}


def planned_change(vm: Vm, prepared: Prepared) -> tuple[str, str] | None:
    """The configuration ``vm`` will have after the attach, and the change in words for the diff's label
    ("attach: 0000:03:00.0 uses the free root port pci.7"); None: a kind without a config text."""
    if vm.kind not in PLANNERS or vm.config is None:
        return None
    planner = importlib.import_module(PLANNERS[vm.kind])
    if hasattr(planner, "plan_change"):  # libvirt: which root port each card takes
        after, doing = planner.plan_change(vm, prepared)
        return str(after), str(doing)
    return str(planner.plan_attach(vm, prepared)), "attach"


def planned_config(vm: Vm, prepared: Prepared) -> str | None:
    """The configuration ``vm`` will have after the attach (None: a kind without a config text)."""
    change = planned_change(vm, prepared)
    return None if change is None else change[0]
