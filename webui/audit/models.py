"""Append-only audit events, chained by SHA-256 (see chain.py)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from webui.audit import chain

RESULTS = [
    ("requested", "requested"),
    ("succeeded", "succeeded"),
    ("unchanged", "unchanged"),
    ("failed", "failed"),
    ("rolled_back", "rolled back"),
    ("refused", "refused"),
]


class AuditEvent(models.Model):
    created = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150, db_index=True)  # a username, "shell:root", "worker", "udev"
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=20)  # web, shell, worker
    host = models.CharField(max_length=253, db_index=True)
    action = models.CharField(max_length=40, db_index=True)
    targets = models.JSONField(default=list)
    parameters = models.JSONField(default=dict)
    state_before = models.JSONField(null=True, blank=True)
    state_after = models.JSONField(null=True, blank=True)
    result = models.CharField(max_length=20, choices=RESULTS, db_index=True)
    error = models.TextField(blank=True, default="")
    job_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # unique: two writers that read the same head cannot both append after it.
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {','.join(self.targets)} on {self.host}: {self.result}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise PermissionError("Audit events are append-only: use record() to add one, never save() an old one.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("Audit events are append-only.")

    def hashed_fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created.isoformat(),
            "actor": self.actor,
            "source": self.source,
            "host": self.host,
            "action": self.action,
            "targets": self.targets,
            "parameters": self.parameters,
            "state_before": self.state_before,
            "state_after": self.state_after,
            "result": self.result,
            "error": self.error,
            "job_id": self.job_id,
        }


class AuditHead(models.Model):
    """The newest event's hash and the number of events: catches deletion of the newest rows."""

    count = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=chain.GENESIS)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.count} events, head {self.last_hash[:12]}"


def _lock_chain() -> None:
    # PostgreSQL: one writer at a time through a transaction-scoped advisory lock.
    # SQLite: the database is opened with BEGIN IMMEDIATE (settings), which serializes writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [0x5057_4155])  # "PWAU"


def record(
    *,
    actor: str,
    source: str,
    host: str,
    action: str,
    result: str,
    targets: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    state_before: Any = None,
    state_after: Any = None,
    error: str = "",
    job_id: int | None = None,
    user: Any = None,
) -> AuditEvent:
    """Append one event to the chain. Safe from several processes at once."""
    for attempt in range(5):
        try:
            with transaction.atomic():
                _lock_chain()
                head, _ = AuditHead.objects.select_for_update().get_or_create(pk=1)
                event = AuditEvent(
                    created=timezone.now(),
                    actor=actor[:150],
                    user=user if getattr(user, "pk", None) else None,
                    source=source,
                    host=host,
                    action=action,
                    targets=list(targets or []),
                    parameters=dict(parameters or {}),
                    state_before=state_before,
                    state_after=state_after,
                    result=result,
                    error=error,
                    job_id=job_id,
                    prev_hash=head.last_hash,
                    # a unique placeholder until the id is known; the hash covers the id
                    hash=f"pending-{timezone.now().timestamp()}-{attempt}",
                )
                event.save()
                event.hash = chain.event_hash(event.prev_hash, event.hashed_fields())
                AuditEvent.objects.filter(pk=event.pk).update(hash=event.hash)
                head.count += 1
                head.last_hash = event.hash
                head.save()
                return event
        except IntegrityError:
            if attempt == 4:
                raise
    raise RuntimeError("unreachable")


def verify_chain() -> chain.Verification:
    head = AuditHead.objects.filter(pk=1).first()
    rows = (
        {**event.hashed_fields(), "prev_hash": event.prev_hash, "hash": event.hash}
        for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000)
    )
    return chain.verify(rows, head.count if head else 0, head.last_hash if head else None)
