"""Snapshots: what a worker saw on its host, stored so pages never touch hardware."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.utils import timezone

from passthrough import readiness
from passthrough.diagnose.run import diagnose
from passthrough.host import HostTree
from passthrough.pci.scan import scan
from passthrough.readiness.facts import HostFacts
from passthrough.vms import give
from passthrough.vms.model import KINDS, VmInventory, VmSource
from webui.hosts.models import Host, Snapshot
from webui.hosts.trees import vm_connection

logger = logging.getLogger(__name__)


def this_host() -> Host:
    """The Host row of the machine this process runs on (created on first use)."""
    host, _ = Host.objects.get_or_create(
        name=settings.PASSTHROUGH_HOSTNAME, defaults={"root": settings.PASSTHROUGH_ROOT}
    )
    return host


def take_snapshot(host: Host, tree: HostTree, source: str, reason: str = "") -> Snapshot:
    inventory = scan(tree)
    facts = HostFacts(tree)  # read once for both: on the live host the kernel log is a dmesg run
    report = readiness.report(tree, facts)
    # The Diagnose page reads this: the web process never reads the host's logs itself.
    report["diagnosis"] = diagnose(tree, inventory=inventory, facts=facts).to_json()
    vms = read_vms(tree)
    Host.objects.filter(pk=host.pk).update(last_seen=timezone.now(), root=tree.root)
    return Snapshot.objects.create(
        host=host, source=source, inventory=inventory.to_json(), readiness=report, reason=reason[:200], vms=vms
    )


def read_vms(tree: HostTree) -> dict[str, Any]:
    """The host's VMs as the snapshot keeps them; a kind that fails to read says so and spoils nothing else."""
    connection = vm_connection(tree)
    sources = []
    for kind in KINDS:
        try:
            sources.append(give.read_source(tree, kind, connection))
        except Exception as error:  # a VM reader's bug must not cost the host its snapshot
            logger.exception("reading %s VMs failed", kind)
            sources.append(VmSource(kind, False, f"Reading failed: {type(error).__name__}: {error}"))
    return VmInventory(sources).to_json()
