"""Append-only audit events, chained by HMAC-SHA-256 under a key the database does not hold (see chain.py)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
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
    ("expired", "expired"),
    ("cancelled", "cancelled"),
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
    """The newest event's hash and the number of events: catches deletion of the newest rows.

    ``mac`` seals the two under the audit key, so truncating the log and rewriting the head
    to match needs the key too.
    """

    count = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=chain.GENESIS)
    mac = models.CharField(max_length=64, blank=True, default="")
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.count} events, head {self.last_hash[:12]}"


class AuditCheckpoint(models.Model):
    """A point up to which the chain was verified, sealed under the audit key.

    The audit page verifies from the newest checkpoint on, so its cost follows the events
    written since, not the size of the log; ``audit_verify`` still walks everything.
    """

    event_id = models.BigIntegerField(unique=True)
    count = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    mac = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-event_id"]

    def __str__(self) -> str:
        return f"verified to event {self.event_id} ({self.count} events)"


def audit_key() -> bytes:
    key = settings.AUDIT_KEY
    if not key:
        raise ImproperlyConfigured(
            "No audit key: set AUDIT_KEY or AUDIT_KEY_FILE, or run scripts/run once, which writes var/audit_key. "
            "Every web app and worker of an install needs the same key."
        )
    return key.encode()


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
    """Append one event to the chain. Safe from several processes at once.

    Called inside a transaction (a job's outcome, a job row), the event commits or rolls
    back with it.
    """
    key = audit_key()
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
                event.hash = chain.event_hash(key, event.prev_hash, event.hashed_fields())
                AuditEvent.objects.filter(pk=event.pk).update(hash=event.hash)
                head.count += 1
                head.last_hash = event.hash
                head.mac = chain.seal(key, "head", head.count, head.last_hash)
                head.save()
                return event
        except IntegrityError:
            if attempt == 4:
                raise
    raise RuntimeError("unreachable")


def _rows(after_id: int = 0) -> Any:
    return (
        {**event.hashed_fields(), "prev_hash": event.prev_hash, "hash": event.hash}
        for event in AuditEvent.objects.filter(id__gt=after_id).order_by("id").iterator(chunk_size=2000)
    )


def _head_problems(key: bytes, head: AuditHead | None) -> list[str]:
    if head is None or head.count == 0 or chain.sealed(key, head.mac, "head", head.count, head.last_hash):
        return []
    return ["The log's head (its count of events and newest hash) was rewritten without the audit key."]


def verify_chain() -> chain.Verification:
    """Every event from the first: what ``audit_verify`` runs."""
    key = audit_key()
    head = AuditHead.objects.filter(pk=1).first()
    result = chain.verify(key, _rows(), head.count if head else 0, head.last_hash if head else None)
    return _with(result, _head_problems(key, head))


def _with(result: chain.Verification, problems: list[str]) -> chain.Verification:
    if problems:
        result.problems = problems + result.problems
        result.ok = False
    return result


CHECKPOINT_EVERY = 1000


def _checkpoint(key: bytes) -> AuditCheckpoint | None:
    """The newest checkpoint that is sealed and whose event still carries the hash it sealed."""
    for checkpoint in AuditCheckpoint.objects.order_by("-event_id")[:5]:
        if not chain.sealed(key, checkpoint.mac, "checkpoint", checkpoint.event_id, checkpoint.count, checkpoint.hash):
            continue
        if AuditEvent.objects.filter(pk=checkpoint.event_id, hash=checkpoint.hash).exists():
            return checkpoint
    return None


def verify_recent() -> chain.Verification:
    """The events since the last verified checkpoint, and the head: what the audit page runs.

    An intact walk of at least CHECKPOINT_EVERY new events leaves a new checkpoint, so the
    next visit starts there. Its ``checked`` counts the events walked this time.
    """
    key = audit_key()
    head = AuditHead.objects.filter(pk=1).first()
    checkpoint = _checkpoint(key)
    start_id, start_hash, start_count = (
        (checkpoint.event_id, checkpoint.hash, checkpoint.count) if checkpoint else (0, chain.GENESIS, 0)
    )
    last = {"id": start_id}

    def walked() -> Any:  # streamed, noting the newest id for the checkpoint
        for row in _rows(start_id):
            last["id"] = row["id"]
            yield row

    result = chain.verify(
        key,
        walked(),
        head.count if head else 0,
        head.last_hash if head else None,
        start_hash=start_hash,
        start_count=start_count,
    )
    result = _with(result, _head_problems(key, head))
    if result.ok and result.checked >= CHECKPOINT_EVERY:
        count, last_id = start_count + result.checked, last["id"]
        AuditCheckpoint.objects.get_or_create(
            event_id=last_id,
            defaults={
                "count": count,
                "hash": result.head,
                "mac": chain.seal(key, "checkpoint", last_id, count, result.head),
            },
        )
    return result


class RefusalBurst(models.Model):
    """Refusals of one kind on one host (broker messages, locked-out sign-ins), counted instead of audited one by one.

    The first refusal of a burst is audited at once (so an attack shows), the rest only
    counted; when the burst's window has passed, one more event gives the count and the
    time span. A flood of forged messages therefore writes two events a window, however
    many messages it sends.
    """

    host = models.CharField(max_length=253)
    action = models.CharField(max_length=40, default="broker_message")  # what was refused: a message, a sign-in
    source = models.CharField(max_length=20, default="worker")  # where: the worker, or the web app
    started = models.DateTimeField()
    last = models.DateTimeField()
    count = models.BigIntegerField(default=1)
    sample = models.JSONField(default=dict)
    closed = models.BooleanField(default=False, db_index=True)

    def __str__(self) -> str:
        return f"{self.count} refused {self.action} on {self.host} since {self.started:%H:%M:%S}"
