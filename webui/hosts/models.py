"""Hosts and the snapshots their workers store: pages render from snapshots, never from hardware."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.db import models

from passthrough.pci.model import Inventory
from passthrough.vms.model import VmInventory


class Host(models.Model):
    name = models.CharField(max_length=253, unique=True)
    root = models.CharField(max_length=4096, default="/")  # the tree its worker reads
    created = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)  # the worker's last word

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """The Celery queue only this host's worker consumes."""
        return f"host.{self.name}"

    def latest_snapshot(self) -> Snapshot | None:
        return self.snapshots.order_by("-created", "-id").first()


class Snapshot(models.Model):
    class Source(models.TextChoices):
        STARTUP = "startup", "worker start"
        JOB = "job", "after a job"
        UDEV = "udev", "device event"
        SCAN = "scan", "scan requested"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="snapshots")
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=20, choices=Source.choices)
    inventory = models.JSONField()  # Inventory.to_json()
    readiness = models.JSONField()  # passthrough.readiness report: {"ready", "checks"}
    vms = models.JSONField(default=dict)  # passthrough.vms VmInventory.to_json(): the VMs and what they hold
    reason = models.CharField(max_length=200, blank=True, default="")  # e.g. "unbind 0000:01:00.0"

    class Meta:
        ordering = ["-created", "-id"]
        get_latest_by = "created"

    def __str__(self) -> str:
        return f"{self.host} at {self.created:%Y-%m-%d %H:%M:%S} ({self.source})"

    @cached_property
    def parsed(self) -> Inventory:
        return Inventory.from_json(self.inventory)

    @cached_property
    def vm_inventory(self) -> VmInventory:
        return VmInventory.from_json(self.vms)

    @property
    def ready(self) -> bool:
        return bool(self.readiness.get("ready"))

    def checks(self) -> list[dict[str, Any]]:
        return list(self.readiness.get("checks", []))
