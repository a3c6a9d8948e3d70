"""What a VM looks like to the wizard: its kind, state, machine, and the host functions it holds.

A VM is named by a reference, ``<kind>:<id>``: ``libvirt:win11`` (the domain name),
``proxmox:101`` (the VMID), ``qemu:/run/vm1.qmp`` (the QMP socket's path). The model is
JSON both ways (the worker stores it with the host's snapshot; the pages read it back).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from passthrough.errors import PassthroughError

KINDS = ("libvirt", "proxmox", "qemu")


class VmError(PassthroughError):
    """A VM cannot be found, read or changed as asked; the message says which and why."""

    code = "vm_error"


class UnknownVm(VmError):
    code = "unknown_vm"


class DeviceHeldElsewhere(VmError):
    code = "device_held_elsewhere"


class ConfigChanged(VmError):
    """The VM's configuration changed since the diff the user saw was made from it."""

    code = "vm_config_changed"


def config_diff(reference: str, before: str, after: str, doing: str) -> str:
    """A unified diff of a VM's configuration, labelled with the VM and what changes it."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{reference} (before {doing})",
            tofile=f"{reference} (after {doing})",
        )
    )


def config_plan(reference: str, before: str, after: str, doing: str) -> dict[str, Any]:
    """What a VM job's result keeps of a configuration change (``result.plan``): the diff and both texts."""
    return {"diff": config_diff(reference, before, after, doing), "before": before, "after": after,
            "fingerprint": fingerprint(after)}  # fmt: skip


def fingerprint(text: str | None) -> str | None:
    """What a configuration is compared by (the diff shown and the config acted on must match)."""
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class HeldDevice:
    """A host PCI function a VM has (in its saved configuration, in the running VM, or both)."""

    host: str  # dddd:bb:ss.f on this host
    guest: str | None = None  # dddd:bb:ss.f where the guest sees it, when known
    config: bool = True  # in the saved configuration (the next start uses it)
    live: bool = False  # in the running VM now
    alias: str | None = None  # libvirt's <alias name>, QEMU's device id, Proxmox's hostpciN


@dataclass
class Vm:
    kind: str
    id: str  # domain name, VMID, or QMP socket path
    name: str
    state: str  # running, paused, shut off (libvirt); running, stopped (Proxmox); running, paused (QEMU)
    machine: str | None = None  # the machine type: q35, pc-q35-7.2, pc-i440fx-7.2, …
    devices: list[HeldDevice] = field(default_factory=list)
    config: str | None = None  # libvirt's inactive XML or the Proxmox .conf: what a planned change starts from
    hotplug: str | None = None  # why a device cannot be hot-plugged into it now; None: it can (when running)
    free_ports: int | None = None  # hot-pluggable root ports with nothing on them, in the running VM
    detail: str = ""  # anything else worth a line (autostart, the QEMU binary, the node)

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused")

    @property
    def q35(self) -> bool:
        return bool(self.machine) and "q35" in str(self.machine)

    @property
    def fingerprint(self) -> str | None:
        return fingerprint(self.config)

    def holds(self, address: str) -> HeldDevice | None:
        return next((device for device in self.devices if device.host == address), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ref"] = self.ref
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vm:
        fields = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        fields["devices"] = [HeldDevice(**device) for device in data.get("devices", [])]
        return cls(**fields)


@dataclass
class VmSource:
    """One kind of VM on the host: whether it could be read, and what it holds."""

    kind: str
    available: bool
    detail: str  # "qemu:///system (libvirt 9.0.0)", or why it could not be read
    vms: list[Vm] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "available": self.available, "detail": self.detail,
                "vms": [vm.to_json() for vm in self.vms]}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VmSource:
        return cls(
            kind=data["kind"],
            available=bool(data.get("available")),
            detail=str(data.get("detail", "")),
            vms=[Vm.from_json(vm) for vm in data.get("vms", [])],
        )


@dataclass
class VmInventory:
    sources: list[VmSource] = field(default_factory=list)

    @property
    def vms(self) -> list[Vm]:
        return [vm for source in self.sources for vm in source.vms]

    def source(self, kind: str) -> VmSource | None:
        return next((source for source in self.sources if source.kind == kind), None)

    def find(self, reference: str) -> Vm:
        """The VM a reference names: ``kind:id``, or a bare name or id that only one VM has."""
        if ":" in reference and reference.split(":", 1)[0] in KINDS:
            kind, ident = reference.split(":", 1)
            found = [vm for vm in self.vms if vm.kind == kind and vm.id == ident]
            if not found:
                source = self.source(kind)
                why = "" if source is None or source.available else f" ({source.detail})"
                raise UnknownVm(f"There is no {kind} VM {ident!r} on this host{why}.", hint=self._known())
            return found[0]
        found = [vm for vm in self.vms if reference in (vm.id, vm.name)]
        if len(found) == 1:
            return found[0]
        if not found:
            raise UnknownVm(f"No VM on this host is called {reference!r}.", hint=self._known())
        raise UnknownVm(
            f"{len(found)} VMs are called {reference!r}: {', '.join(vm.ref for vm in found)}.",
            hint="Name it with its kind, for example " + found[0].ref + ".",
        )

    def holder(self, address: str, *, besides: str | None = None) -> tuple[Vm, HeldDevice] | None:
        """A VM other than ``besides`` that already has ``address`` (configured or live)."""
        for vm in self.vms:
            held = vm.holds(address)
            if held is not None and vm.ref != besides:
                return vm, held
        return None

    def _known(self) -> str:
        names = [vm.ref for vm in self.vms]
        if names:
            return "VMs on this host: " + ", ".join(names) + "."
        return "No VM was found on this host; `manage.py vm list` says where the wizard looked."

    def to_json(self) -> dict[str, Any]:
        return {"sources": [source.to_json() for source in self.sources]}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> VmInventory:
        return cls(sources=[VmSource.from_json(source) for source in (data or {}).get("sources", [])])
