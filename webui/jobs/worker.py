"""What a host's worker does besides running tasks.

On start: register its host (kernel, CPU vendor, IOMMU, the app's version), close jobs a
previous run left running, store a first snapshot, and send queued jobs again (each
one's message as the web app signed and stored it: the worker signs nothing). While it
runs: watch the kernel's PCI events (add, remove, bind, unbind) with pyudev and store a
fresh snapshot after each burst of them, so a change made by hand shows in the UI; and
every PASSTHROUGH_HEARTBEAT_SECONDS say it is alive, expire queued jobs that waited too
long (its own, and those of hosts that are offline, whose own worker cannot), send again
the queued jobs whose message the broker lost (a Redis restarted without persistence),
close running jobs whose process has gone since (see reconcile) and audit the count of
refused messages whose window has passed.

Only a worker that consumes its host's queue does this; the web process imports this module
too (Django loads the app) but its signals never fire there.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery.signals import task_failure, worker_process_init, worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

logger = logging.getLogger(__name__)

DEBOUNCE_SECONDS = 1.0
PCI_ACTIONS = frozenset({"add", "remove", "bind", "unbind", "change"})

_stop = threading.Event()


def _consumes_own_queue(sender: Any) -> bool:
    queue = f"host.{settings.PASSTHROUGH_HOSTNAME}"
    try:
        names = {q.name for q in sender.app.amqp.queues.consume_from.values()}
    except AttributeError:
        return False
    return queue in names


@worker_ready.connect
def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    if sender is None or not _consumes_own_queue(sender):
        return
    start_host_duties()


def start_host_duties() -> None:
    from webui.hosts.models import Snapshot
    from webui.hosts.registration import register
    from webui.hosts.snapshots import take_snapshot, this_host
    from webui.hosts.trees import worker_tree
    from webui.jobs.reconcile import reconcile, resend_queued

    _stop.clear()
    host = this_host()
    tree = worker_tree()
    register(host, tree)
    reconcile(host, tree)
    take_snapshot(host, tree, Snapshot.Source.STARTUP, reason="worker started")
    resent = resend_queued(host)
    if resent:
        logger.info("sent %d queued job(s) again", resent)
    close_old_connections()
    threading.Thread(target=_heartbeat, name="heartbeat", daemon=True).start()
    if tree.is_live and settings.PASSTHROUGH_WATCH_UDEV:
        threading.Thread(target=watch_pci_events, name="udev", daemon=True).start()


@worker_shutdown.connect
def on_worker_shutdown(**kwargs: Any) -> None:
    _stop.set()


@worker_process_init.connect
def on_pool_process_init(**kwargs: Any) -> None:
    """A pool process imports what a job runs (the runner, passthrough.ops) as it starts, not in its first job.

    Otherwise the first job after a worker starts pays for those imports: a tenth of a
    second each, which adds up when every host of an install is refreshed at once.
    """
    from webui.jobs import runner  # noqa: F401


@task_failure.connect
def on_task_failure(sender: Any = None, exception: BaseException | None = None, **kwargs: Any) -> None:
    """A message whose body could not be verified, or a pool process lost mid-job.

    Celery verifies a task message's signature (and its content type) in the pool process,
    just before the task would run; a message that fails ends here, never in the task. A
    child killed by the hard time limit or by the OOM killer leaves its job running.
    """
    from billiard.exceptions import TimeLimitExceeded, WorkerLostError
    from celery.exceptions import SecurityError
    from kombu.exceptions import ContentDisallowed, DecodeError

    if isinstance(exception, (SecurityError, ContentDisallowed, DecodeError)):
        from webui.audit.refusals import refuse

        refuse(
            settings.PASSTHROUGH_HOSTNAME,
            f"A message that is not signed by a trusted key, or was altered, was dropped ({exception}).",
            {"task": str(getattr(sender, "name", ""))[:100], "id": str(kwargs.get("task_id", ""))[:100]},
        )
        return
    if not isinstance(exception, (WorkerLostError, TimeLimitExceeded)):
        return
    from webui.hosts.snapshots import this_host
    from webui.hosts.trees import worker_tree
    from webui.jobs.reconcile import reconcile

    logger.warning("a job's process was lost (%s); reconciling", type(exception).__name__)
    reconcile(this_host(), worker_tree())


def _heartbeat() -> None:
    from webui.jobs.reconcile import LostMessages

    lost = LostMessages()
    while not _stop.wait(settings.PASSTHROUGH_HEARTBEAT_SECONDS):
        try:
            beat(lost)
        except Exception:  # the database or the broker may be restarting; the next beat tries again
            logger.warning("heartbeat failed", exc_info=True)
        finally:
            connection.close()


def beat(lost: Any = None) -> None:
    from webui.audit.refusals import close_finished_bursts
    from webui.hosts.models import Host
    from webui.jobs.service import expire_stale

    name = settings.PASSTHROUGH_HOSTNAME
    now = timezone.now()
    Host.objects.filter(name=name).update(last_seen=now)
    for host in Host.objects.all():
        if host.name != name and not host.is_offline_at(now):
            continue  # an online host's own worker expires its jobs
        # An offline host's worker cannot expire its jobs, so whichever worker beats does:
        # closing a row is all it takes, nothing on that host is touched.
        expired = expire_stale(host, settings.PASSTHROUGH_JOB_MAX_WAIT)
        if expired:
            logger.warning("expired %d queued job(s) of %s that waited too long", expired, host.name)
        if host.name == name:
            if lost is not None:
                lost.resend(host)
            _reconcile_orphans(host)
    close_finished_bursts(name)
    # Keeps the audit page's checkpoint recent, so no visit walks more than a beat's events.
    from webui.audit.models import verify_recent

    verify_recent()


def _reconcile_orphans(host: Any) -> None:
    """Close running jobs whose owner has gone since the start-up's reconcile left them alone.

    A pool process asleep in the kernel outlives a SIGKILL of its worker; the next worker
    starts while it still runs, and without this the job would stay running, its group
    locked, until yet another restart.
    """
    from webui.jobs import owner
    from webui.jobs.models import Job, State

    running = Job.objects.filter(host=host, state=State.RUNNING).values_list("owner", flat=True)
    if any(owner.is_gone(text) for text in running):
        from webui.hosts.trees import worker_tree
        from webui.jobs.reconcile import reconcile

        reconcile(host, worker_tree())


def watch_pci_events(stop: threading.Event | None = None, on_burst: Any = None) -> None:
    """Snapshot the host after each burst of PCI uevents. Runs until ``stop`` is set."""
    import pyudev

    stop = stop or _stop
    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context, source="kernel")
    monitor.filter_by("pci")
    monitor.start()
    pending: list[str] = []
    deadline = None
    while not stop.is_set():
        device = monitor.poll(timeout=0.25)
        if device is not None and device.action in PCI_ACTIONS:
            pending.append(f"{device.action} {device.sys_name}")
            deadline = time.monotonic() + DEBOUNCE_SECONDS
        if pending and deadline is not None and time.monotonic() >= deadline:
            events, pending, deadline = pending, [], None
            try:
                (on_burst or _snapshot_after_events)(events)
            except Exception:
                logger.warning("snapshot after PCI events failed", exc_info=True)
            finally:
                connection.close()


def _snapshot_after_events(events: list[str]) -> None:
    from webui.hosts.models import Snapshot
    from webui.hosts.snapshots import take_snapshot, this_host
    from webui.hosts.trees import worker_tree

    reason = ", ".join(events[:4]) + (f" and {len(events) - 4} more" if len(events) > 4 else "")
    take_snapshot(this_host(), worker_tree(), Snapshot.Source.UDEV, reason=reason)
