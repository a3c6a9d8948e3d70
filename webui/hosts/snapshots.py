"""Snapshots: what a worker saw on its host, stored so pages never touch hardware."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from passthrough import readiness
from passthrough.diagnose.run import diagnose
from passthrough.host import HostTree
from passthrough.pci.scan import scan
from webui.hosts.models import Host, Snapshot


def this_host() -> Host:
    """The Host row of the machine this process runs on (created on first use)."""
    host, _ = Host.objects.get_or_create(
        name=settings.PASSTHROUGH_HOSTNAME, defaults={"root": settings.PASSTHROUGH_ROOT}
    )
    return host


def take_snapshot(host: Host, tree: HostTree, source: str, reason: str = "") -> Snapshot:
    inventory = scan(tree)
    report = readiness.report(tree)
    # The Diagnose page reads this: the web process never reads the host's logs itself.
    report["diagnosis"] = diagnose(tree, inventory=inventory).to_json()
    Host.objects.filter(pk=host.pk).update(last_seen=timezone.now(), root=tree.root)
    return Snapshot.objects.create(
        host=host, source=source, inventory=inventory.to_json(), readiness=report, reason=reason[:200]
    )
