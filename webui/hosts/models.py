"""Hosts and the snapshots their workers store: pages render from snapshots, never from hardware."""

from __future__ import annotations

import datetime
from functools import cached_property
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.timesince import timesince

from passthrough.pci.model import Inventory
from passthrough.vms.model import VmInventory

CPU_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon"}


class Host(models.Model):
    name = models.CharField(max_length=253, unique=True)
    root = models.CharField(max_length=4096, default="/")  # the tree its worker reads
    created = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)  # the worker's last word
    # What the worker says about its host when it starts (webui/hosts/registration.py).
    registered = models.DateTimeField(null=True, blank=True)  # when its worker last started
    kernel = models.CharField(max_length=200, blank=True, default="")  # proc/sys/kernel/osrelease
    cpu_vendor = models.CharField(max_length=40, blank=True, default="")  # "GenuineIntel", "AuthenticAMD"
    iommu_enabled = models.BooleanField(null=True, blank=True)  # None: the worker could not tell
    iommu_detail = models.CharField(max_length=300, blank=True, default="")  # the readiness check's finding
    worker_version = models.CharField(max_length=100, blank=True, default="")  # "0.1.0+3583cb1"

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def silence(self, now: datetime.datetime | None = None) -> datetime.timedelta | None:
        """How long since the worker was last heard from; None when it never was."""
        if self.last_seen is None:
            return None
        return (now or timezone.now()) - self.last_seen

    def is_offline_at(self, now: datetime.datetime) -> bool:
        silence = self.silence(now)
        return silence is None or silence.total_seconds() > settings.PASSTHROUGH_OFFLINE_AFTER

    @property
    def is_offline(self) -> bool:
        """No heartbeat for longer than PASSTHROUGH_OFFLINE_AFTER: its jobs wait (and may expire)."""
        return self.is_offline_at(timezone.now())

    def absence(self, now: datetime.datetime | None = None) -> str:
        """ "pve2 has not been seen for 4 minutes", in words, for pages and job messages."""
        if self.last_seen is None:
            return f"{self.name}'s worker has never reported"
        now = now or timezone.now()
        if (now - self.last_seen).total_seconds() < 120:  # "1 minute" would hide up to 59 seconds
            return f"{self.name} has not been seen for {int((now - self.last_seen).total_seconds())} seconds"
        return f"{self.name} has not been seen for {timesince(self.last_seen, now)}".replace("\xa0", " ")

    @property
    def cpu_vendor_name(self) -> str:
        return CPU_VENDORS.get(self.cpu_vendor, self.cpu_vendor)

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
