"""Submitting jobs: save the row, take the group lock, audit the request, then enqueue.

The web process never acts on hardware. The views check what they can against the host's
latest snapshot first (so a user hears "this group is not viable" at once); this module
saves a queued Job with its task message, signed once (webui/jobs/signed.py), takes the
group's lock and audits the request in one transaction, then publishes that message (JSON
primitives only) to the host's own queue. Sending a job again, here or from a worker,
publishes the stored message as it is and signs nothing. The root worker validates
everything again against the live sysfs, and checks that the job's creator may still run
it, before it writes anything. A queued job can be cancelled until it starts.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from kombu.exceptions import EncodeError
from kombu.exceptions import OperationalError as KombuOperationalError

from passthrough.errors import PassthroughError
from passthrough.pci.address import PciAddress
from webui.audit.models import record
from webui.hosts.models import Host
from webui.jobs import signed
from webui.jobs.closing import JobRefused, close_queued
from webui.jobs.models import Action, GroupLock, Job, State

logger = logging.getLogger(__name__)


class BrokerUnavailable(PassthroughError):
    code = "broker_unavailable"


def _group_for(host: Host, targets: list[str]) -> int | None:
    """The IOMMU group the job locks, from the latest snapshot (the worker re-checks)."""
    snapshot = host.latest_snapshot()
    if snapshot is None or not targets:
        return None
    function = snapshot.parsed.device(targets[0])
    return None if function is None else function.iommu_group


def create_job(
    *,
    host: Host,
    action: str,
    targets: list[str],
    parameters: dict[str, Any] | None = None,
    user: Any = None,
    actor: str,
    state: str = State.QUEUED,
    audit: dict[str, Any] | None = None,
) -> Job:
    """Save a job row and take its IOMMU group's lock, or JobRefused when the group is busy.

    A job created running (the shell's) is owned by this process. A queued job gets its
    task message, signed with this process's key, in the same transaction: only the web app
    creates queued jobs, and no one signs a job's message afterwards. ``audit`` (record()'s
    keywords) is written in the same transaction as the row.
    """
    from webui.jobs import owner

    if action not in Action.values:
        raise JobRefused(f"{action!r} is not a job this app runs.")
    clean_targets = [str(PciAddress.parse(target)) for target in targets]
    group = _group_for(host, clean_targets) if action != Action.SCAN else None
    try:
        with transaction.atomic():
            job = Job.objects.create(
                host=host,
                user=user if getattr(user, "pk", None) else None,
                actor=actor,
                action=action,
                targets=clean_targets,
                parameters=dict(parameters or {}),
                group=group,
                state=state,
                started=timezone.now() if state == State.RUNNING else None,
                owner=str(owner.current()) if state == State.RUNNING else "",
            )
            if state == State.QUEUED:
                job.signed_message = signed.sign(job)
                job.save(update_fields=["signed_message"])
            if group is not None:
                GroupLock.objects.create(host=host, group=group, job=job)
            if audit is not None:
                record(**audit, targets=clean_targets, parameters=job.parameters, job_id=job.pk)
    except IntegrityError:
        running = GroupLock.objects.filter(host=host, group=group).select_related("job").first()
        detail = f" (job {running.job.pk}, {running.job.get_action_display().lower()})" if running else ""
        raise JobRefused(
            f"IOMMU group {group} on {host.name} already has a job in progress{detail}.",
            hint="Wait for it to finish; its page shows its progress.",
        ) from None
    except EncodeError as error:  # no signing key here (a host's worker has none): nothing was saved
        raise BrokerUnavailable(f"The job's message cannot be signed: {error}") from None
    return job


def submit(
    *,
    host: Host,
    action: str,
    targets: list[str],
    parameters: dict[str, Any] | None = None,
    user: Any = None,
    actor: str | None = None,
) -> Job:
    """Save a queued job and send it to ``host``'s worker. Raises JobRefused or BrokerUnavailable."""
    actor = actor or getattr(user, "username", None) or "anonymous"
    check_sending()
    request = {
        "actor": actor,
        "user": user,
        "source": "web" if user is not None else "api",
        "host": host.name,
        "action": action,
        "result": "requested",
    }
    job = create_job(
        host=host, action=action, targets=targets, parameters=parameters, user=user, actor=actor, audit=request
    )
    if host.is_offline:
        # Said at once, on the job's page: the job is sent all the same and runs if the host
        # comes back in time.
        job.message = offline_message(host)
        Job.objects.filter(pk=job.pk, state=State.QUEUED).update(message=job.message)
    try:
        send(job)
    except BrokerUnavailable as error:
        close_unsent(job, error)
        raise
    return job


def check_sending() -> None:
    """Refuse before a job row exists when no message could be sent safely: an open broker, no signing key."""
    from django.conf import settings

    from webui.celery import SIGNING_READY, app
    from webui.jobs.broker import BrokerRefused, SigningFiles, check_broker_url

    try:
        check_broker_url(app.conf.broker_url, settings.PASSTHROUGH_ALLOW_UNAUTHENTICATED_BROKER)
    except BrokerRefused as error:
        raise BrokerUnavailable(f"Jobs are not sent to this broker: {error}") from None
    files = SigningFiles(settings.BROKER_SIGNING_DIR)
    if not SIGNING_READY or not files.exist():  # a host's worker has a certificate to verify with, no key
        raise BrokerUnavailable(
            "Jobs cannot be signed: " + files.missing(),
            hint="The root worker runs only signed jobs.",
        )


def _check_broker(url: str) -> None:
    """Fail in milliseconds when Redis is down: kombu's own connect retries take seconds."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, retry=None)
    try:
        client.ping()
    except redis.RedisError as error:
        raise BrokerUnavailable(
            f"The job queue (Redis) cannot be reached: {error}",
            hint="Start Redis or check REDIS_URL; for recovery on the host itself use `manage.py device ...` as root.",
        ) from error
    finally:
        client.close()


def send(job: Job) -> None:
    """Publish the message the web app stored with the job, byte for byte; nothing is signed here.

    The web app sends a job once it is saved; a worker sends a queued job again when the
    broker lost its message. A job with no stored message is not sent (JobRefused).
    """
    from webui.celery import app

    stored = signed.StoredMessage.parse(job.signed_message)
    if stored is None:
        raise JobRefused(f"Job {job.pk} {NO_SIGNED_MESSAGE}.", hint=SUBMIT_AGAIN)
    _check_broker(app.conf.broker_url)
    try:
        signed.publish(stored)  # no retry: a dead broker must fail this request now, not in minutes
    except (KombuOperationalError, OSError) as error:
        raise BrokerUnavailable(
            f"The job queue (Redis) cannot be reached: {error}.",
            hint="Start Redis or check REDIS_URL; for recovery on the host itself use `manage.py device ...` as root.",
        ) from error


def close_unsent(job: Job, error: PassthroughError) -> None:
    close_queued(job, State.FAILED, "failed", str(error), actor=job.actor, user=job.user, source="web")
    logger.warning("job %s not sent: %s", job.pk, error)


def cancel(job: Job, user: Any) -> bool:
    """An operator cancels a job that has not started; False when it already has."""
    return close_queued(
        job,
        State.CANCELLED,
        "cancelled",
        f"Cancelled by {user.username} before it started; nothing was changed.",
        actor=user.username,
        user=user,
        source="web",
    )


def offline_message(host: Host) -> str:
    """What a job for a host that is offline says from the start."""
    return f"{host.absence()}; the job waits for it until it expires."


NO_SIGNED_MESSAGE = (
    "has no message signed by the web app (it was made by an older version, or written into the "
    "database by hand), so no worker sends it"
)
SUBMIT_AGAIN = "Submit it again from the web app if it is still wanted."


def expire_stale(host: Host, max_wait: int) -> int:
    """Close the queued jobs of ``host`` that waited longer than ``max_wait`` seconds (a worker's heartbeat).

    A job whose host is offline says so in its message, as it did while it waited; a job
    without a signed message says that it has none and must be submitted again.
    """
    now = timezone.now()
    cutoff = now - datetime.timedelta(seconds=max_wait)
    limit = f"{max_wait // 60} minutes" if max_wait >= 120 else f"{max_wait} seconds"
    if host.is_offline_at(now):
        why = f"Not run: {host.absence(now)}; the job waited more than {limit} for {host.name}'s worker and expired."
    else:
        why = f"Not run: the job waited more than {limit} for {host.name}'s worker."
    expired = 0
    for job in Job.objects.filter(host=host, state=State.QUEUED, created__lt=cutoff).select_related("host"):
        if signed.StoredMessage.parse(job.signed_message) is not None:
            message = f"{why} Nothing was changed; start it again if it is still wanted."
        else:
            message = f"Not run: the job {NO_SIGNED_MESSAGE}. Nothing was changed. {SUBMIT_AGAIN}"
        expired += close_queued(job, State.EXPIRED, "expired", message, actor="worker")
    return expired
