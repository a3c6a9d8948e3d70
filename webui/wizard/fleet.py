"""Every host at once, from each one's latest snapshot: online or not, ready or not, what is on vfio-pci.

And the one bulk change that makes sense across hosts: the same SR-IOV VF count on every
physical function of one NIC model (vendor:device), each checked here against its own
host's snapshot (its maximum, the interlock) and again by its own worker when the job runs.
Nothing here reads hardware or sends a job; the views do the sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from passthrough.ops.interlock import SET_SRIOV_VFS, judge
from webui.hosts.models import Host, Snapshot
from webui.jobs.models import Job
from webui.wizard import snapshots

VFIO = "vfio-pci"


@dataclass
class HostRow:
    host: Host
    snapshot: Snapshot | None
    offline: bool
    scan: Job | None = None  # the scan a page follows for this host, if any

    @property
    def ready(self) -> bool | None:
        return None if self.snapshot is None else self.snapshot.ready

    @property
    def reasons(self) -> list[str]:
        return list((self.snapshot.readiness.get("reasons") if self.snapshot else None) or [])

    @cached_property
    def checks_by_id(self) -> dict[str, dict[str, Any]]:
        return {str(check.get("id")): check for check in (self.snapshot.checks() if self.snapshot else [])}

    @property
    def on_vfio(self) -> list[dict[str, Any]]:
        devices = (self.snapshot.inventory.get("devices") if self.snapshot else None) or []
        return [device for device in devices if device.get("driver") == VFIO]


def host_rows(hosts: list[Host], scans: dict[int, Job] | None = None) -> list[HostRow]:
    """One row per host with its latest snapshot (two queries for any number of hosts)."""
    newest = Snapshot.objects.filter(host=OuterRef("pk")).order_by("-created", "-id").values("id")[:1]
    latest_ids = dict(
        Host.objects.filter(pk__in=[host.pk for host in hosts])
        .annotate(latest=Subquery(newest))
        .values_list("pk", "latest")
    )
    found = {snapshot.host_id: snapshot for snapshot in Snapshot.objects.filter(pk__in=latest_ids.values())}
    now = timezone.now()
    return [HostRow(host, found.get(host.pk), host.is_offline_at(now), (scans or {}).get(host.pk)) for host in hosts]


@dataclass
class VfioRow:
    host: Host
    device: dict[str, Any]
    vm: str | None  # the VM that holds it, as the snapshot saw: "libvirt:win11 (win11)"

    @property
    def label(self) -> str:
        device = self.device
        if device.get("device_name"):
            return str(device["device_name"])
        return f"{device.get('vendor_name') or 'device'} {device.get('vendor_id')}:{device.get('device_id')}"


def vfio_rows(rows: list[HostRow]) -> list[VfioRow]:
    """Which functions are on vfio-pci where, and which VM has each."""
    found = []
    for row in rows:
        if row.snapshot is None:
            continue
        vms = row.snapshot.vm_inventory
        for device in row.on_vfio:
            held = vms.holder(device["address"])
            vm = f"{held[0].ref} ({held[0].name})" if held else None
            found.append(VfioRow(row.host, device, vm))
    return found


@dataclass
class CheckColumn:
    id: str
    title: str


def check_columns(rows: list[HostRow]) -> list[CheckColumn]:
    """Every readiness check any host reported, in the order the checks run."""
    columns: dict[str, str] = {}
    for row in rows:
        for check in row.snapshot.checks() if row.snapshot else []:
            columns.setdefault(str(check.get("id")), str(check.get("title") or check.get("id")))
    return [CheckColumn(check_id, title) for check_id, title in columns.items()]


def readiness_summary(rows: list[HostRow]) -> dict[str, int]:
    return {
        "ready": sum(1 for row in rows if row.ready is True),
        "not_ready": sum(1 for row in rows if row.ready is False),
        "unknown": sum(1 for row in rows if row.ready is None),
        "offline": sum(1 for row in rows if row.offline),
    }


# -- the same VF count on one NIC model everywhere --------------------------------------


@dataclass
class NicModel:
    key: str  # "8086:1521"
    name: str
    functions: int = 0
    hosts: set[str] = field(default_factory=set)


def sriov_models(rows: list[HostRow]) -> list[NicModel]:
    """The SR-IOV physical function models the hosts have, most widespread first."""
    models: dict[str, NicModel] = {}
    for row in rows:
        for device in (row.snapshot.inventory.get("devices") if row.snapshot else None) or []:
            if not device.get("sriov_totalvfs") or device.get("physfn"):
                continue
            key = f"{device.get('vendor_id')}:{device.get('device_id')}"
            name = " ".join(part for part in (device.get("vendor_name"), device.get("device_name")) if part) or key
            model = models.setdefault(key, NicModel(key, name))
            model.functions += 1
            model.hosts.add(row.host.name)
    return sorted(models.values(), key=lambda model: (-len(model.hosts), model.name))


@dataclass
class SriovTarget:
    host: Host
    address: str
    now: int | None  # sriov_numvfs in the snapshot
    total: int
    offline: bool
    refusal: str | None  # why this function is left out, or None: it fits

    @property
    def value(self) -> str:
        """The form's value for this function: host name and address."""
        return f"{self.host.name}|{self.address}"

    @property
    def fits(self) -> bool:
        return self.refusal is None


def sriov_targets(rows: list[HostRow], model: str, count: int) -> list[SriovTarget]:
    """Every physical function of ``model`` on every host, and whether ``count`` VFs fit it."""
    vendor, _, device_id = model.partition(":")
    targets = []
    for row in rows:
        if row.snapshot is None:
            continue
        devices = row.snapshot.inventory.get("devices") or []
        matching = [
            device
            for device in devices
            if device.get("vendor_id") == vendor
            and device.get("device_id") == device_id
            and device.get("sriov_totalvfs")
            and not device.get("physfn")
        ]
        if not matching:
            continue
        inventory = snapshots.prepared(row.snapshot).inventory
        for device in matching:
            total, now = int(device["sriov_totalvfs"]), device.get("sriov_numvfs")
            refusal = _sriov_refusal(inventory, device["address"], count, total, now)
            targets.append(SriovTarget(row.host, device["address"], now, total, row.offline, refusal))
    return targets


def _sriov_refusal(inventory: Any, address: str, count: int, total: int, now: int | None) -> str | None:
    if count > total:
        return f"at most {total} virtual functions on this one"
    if now == count:
        return f"already has {count}"
    verdict = judge(inventory, SET_SRIOV_VFS, [address])
    if not verdict.allowed:
        return verdict.reason()
    if verdict.critical:
        # The typed confirmation is per host and per function: its own device page asks for it.
        return f"host-critical ({verdict.critical_text()}): change it on its own device page, which asks you to confirm"
    return None
