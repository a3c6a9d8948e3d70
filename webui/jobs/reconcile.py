"""Closing jobs a worker left running: after a crash, a kill, a reboot or a hard time limit.

A job marked ``running`` names its owner, the process that runs it (webui/jobs/owner.py):
the worker's pool process, or a root shell's ``manage.py device``. When the worker starts,
or loses a pool process, every running job of its host whose owner is gone was
interrupted; a job whose owner still runs (a shell command) is left to it. Each
interrupted job is put back: the functions of its group return to the
drivers the last snapshot before the job recorded (a half-done bind leaves a function on
no driver at all), a half-done VF change returns to the count it had. Then the job is
closed, its lock released, the audit told, and a fresh snapshot stored. Queued jobs are
sent again: the broker may have lost them, and a duplicate message is ignored by the job's
own state check. Sending again publishes the message the web app stored with the job, as
it is; the worker signs nothing, so a job row without one (an older version's, or one
written into the database by hand) is never sent, and expires.

A job whose owner still ran at the worker's start is looked at again at every heartbeat: a
process asleep in the kernel survives SIGKILL (an unbind of a sound card sleeps in
snd_card_free until the card's last open file is closed), so a restarted worker can find
the old pool process alive, and only later gone.

The broker can lose messages too (a Redis restarted without persistence): ``LostMessages``
sends a queued job again when its message is gone from the broker at two heartbeats in a row.
"""

from __future__ import annotations

import logging
import threading

from django.db import transaction
from django.utils import timezone

from passthrough.errors import PassthroughError
from passthrough.host import HostTree
from passthrough.ops import ROLLED_BACK, OperationResult, Step
from passthrough.ops.result import Recorder
from passthrough.ops.sysfs import functions_state, put_back
from passthrough.pci.model import Inventory
from webui.audit.models import record
from webui.hosts.models import Host, Snapshot
from webui.jobs import owner
from webui.jobs.models import VM_ACTIONS, Action, GroupLock, Job, State
from webui.jobs.runner import snapshot_step

logger = logging.getLogger(__name__)

# The worker reconciles from its start-up, its heartbeat thread and its pool's failure handler:
# one at a time, so no group is put back twice at once.
_reconciling = threading.Lock()


def _before(job: Job) -> Inventory | None:
    started = job.started or job.created
    snapshot = Snapshot.objects.filter(host=job.host, created__lte=started).order_by("-created", "-id").first()
    return snapshot.parsed if snapshot else None


def _put_back_group(tree: HostTree, job: Job, inventory: Inventory, recorder: Recorder) -> list[str]:
    group = inventory.group_of(job.targets[0]) if job.targets else None
    addresses = group.endpoints if group else list(job.targets)
    recorder.result.targets = addresses
    wanted = {}
    for address in addresses:
        function = inventory.device(address)
        if function is not None:
            wanted[address] = {"driver": function.driver, "driver_override": function.driver_override}
    recorder.result.state_before = {"functions": wanted}
    for address, before in wanted.items():
        put_back(tree, recorder, address, before)
    now = functions_state(tree, list(wanted))
    recorder.result.state_after = {
        "functions": {
            address: {key: state[key] for key in ("driver", "driver_override")} for address, state in now.items()
        }
    }
    return [address for address in wanted if recorder.result.state_after["functions"][address] != wanted[address]]


def _put_back_vfs(tree: HostTree, job: Job, inventory: Inventory, recorder: Recorder) -> list[str]:
    from passthrough.ops import set_sriov_vfs

    function = inventory.device(job.targets[0]) if job.targets else None
    if function is None or function.sriov_numvfs is None:
        return []
    recorder.result.state_before = {"sriov_numvfs": function.sriov_numvfs}
    # Putting back what the operator confirmed needs the same confirmation the job carried.
    undo = set_sriov_vfs(
        tree,
        function.address,
        function.sriov_numvfs,
        confirm=job.parameters.get("confirm"),
        progress=recorder.progress,
    )
    recorder.result.state_after = undo.state_after
    return [] if undo.ok else [function.address]


def _put_back_reset_method(tree: HostTree, job: Job, inventory: Inventory, recorder: Recorder) -> list[str]:
    """A reset stopped after choosing its method leaves reset_method on that one method."""
    function = inventory.device(job.targets[0]) if job.targets else None
    if function is None or function.reset_methods is None:
        return []
    wanted = " ".join(function.reset_methods)
    path = f"sys/bus/pci/devices/{function.address}/reset_method"
    recorder.result.state_before = {"reset_method": wanted}
    if (tree.read(path) or "") != wanted:
        with recorder.step("rollback", function.address, f"reset_method back to {wanted or '(none)'}"):
            tree.write(path, wanted or "default")
    now = tree.read(path) or ""
    recorder.result.state_after = {"reset_method": now}
    return [] if now == wanted else [function.address]


def close_interrupted(job: Job, tree: HostTree) -> Job:
    steps = list(job.steps)
    last = next((step["name"] for step in reversed(steps) if step.get("ok") is not False), "start")
    result = OperationResult(job.action, targets=list(job.targets), parameters=dict(job.parameters))

    def progress(step: Step) -> None:
        entry = step.to_json()
        if steps and steps[-1].get("started") == entry["started"] and steps[-1].get("name") == entry["name"]:
            steps[-1] = entry
        else:
            steps.append(entry)

    recorder = Recorder(result, progress)
    inventory = _before(job)
    left: list[str] = []
    try:
        with recorder.step("reconcile", job.host.name, f"the worker stopped during '{last}'; putting the host back"):
            if inventory is None:
                left = list(job.targets)
            elif job.action in (Action.BIND_VFIO, Action.RESTORE_DRIVER):
                left = _put_back_group(tree, job, inventory, recorder)
            elif job.action == Action.SET_SRIOV_VFS:
                left = _put_back_vfs(tree, job, inventory, recorder)
            elif job.action in (Action.RESET, Action.TEST_RESET):
                left = _put_back_reset_method(tree, job, inventory, recorder)
    except (PassthroughError, OSError) as error:
        left = left or list(job.targets)
        logger.warning("reconciling job %s: %s", job.pk, error)

    if (
        job.action in (Action.BIND_VFIO, Action.RESTORE_DRIVER, Action.SET_SRIOV_VFS, Action.RESET, Action.TEST_RESET)
        and not left
        and inventory
    ):
        state, outcome = State.ROLLED_BACK, ROLLED_BACK
        message = (
            f"The worker stopped during '{last}' (killed, crashed or the host rebooted). "
            f"Every function was put back as it was before the job: {', '.join(result.targets)}."
        )
    elif job.action in VM_ACTIONS:
        state, outcome = State.FAILED, "failed"
        vm = job.parameters.get("vm") or f"libvirt:{job.parameters.get('name')}"
        message = (
            f"The worker stopped during '{last}' while changing {vm}. Its configuration may hold part of the "
            "change: the snapshot taken now shows what the VM holds (step 5, `manage.py vm list`); detach "
            "what should not be there, or run the job again."
        )
    elif job.action in (Action.SCAN, Action.PLAN_CHANGE):
        state, outcome = State.FAILED, "failed"
        message = (
            f"The worker stopped during '{last}'. Nothing needs putting back for a {job.action} job; run it again."
        )
    else:
        state, outcome = State.FAILED, "failed"
        message = (
            f"The worker stopped during '{last}' and the host could not be put back entirely"
            + (f" ({', '.join(left)} differ from before)" if left else "")
            + ". Check the device page; the job's steps show how far it went."
        )
    result.outcome = outcome
    result.steps = []  # already in `steps`

    snapshot = snapshot_step(job, tree, progress, reason=f"after reconciling job {job.pk}")

    with transaction.atomic():
        if Job.objects.filter(pk=job.pk, state=State.RUNNING, owner=job.owner).update(
            state=state,
            finished=timezone.now(),
            message=message,
            steps=steps,
            result=result.to_json(),
            snapshot=snapshot,
        ):
            GroupLock.objects.filter(job_id=job.pk).delete()
            record(
                actor="worker",
                source="worker",
                host=job.host.name,
                action=job.action,
                targets=result.targets,
                parameters={**job.parameters, "reconciled": True},
                state_before=result.state_before or None,
                state_after=result.state_after or None,
                result=outcome,
                error=message,
                job_id=job.pk,
            )
    job.refresh_from_db()
    return job


def reconcile(host: Host, tree: HostTree) -> list[Job]:
    """Close every job of ``host`` left running by a process that is gone; jobs whose owner runs are left alone."""
    closed = []
    with _reconciling:
        for job in Job.objects.filter(host=host, state=State.RUNNING).order_by("id"):
            if not owner.is_gone(job.owner):
                logger.info("job %s is running in %s, which is alive: left alone", job.pk, job.owner)
                continue
            closed.append(close_interrupted(job, tree))
    if closed:
        logger.warning("closed %d interrupted job(s) on %s", len(closed), host.name)
    return closed


def broker_task_ids(queue: str) -> set[str] | None:
    """The task ids the broker holds for ``queue``: waiting in it, or delivered and not yet acknowledged.

    Read the way kombu's Redis transport keeps them (a list per queue and priority, and one
    hash of unacknowledged deliveries); None when the broker is not a Redis or cannot be read.
    """
    import json

    import redis
    from django.conf import settings
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = [queue] + [f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS if step]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(key, 0, -1)
        pipe.hvals(Channel.unacked_key)
        *lists, unacked = pipe.execute()
    except redis.RedisError:
        return None
    finally:
        client.close()
    ids = set()
    for raw in [item for items in lists for item in items] + [json.loads(value)[0] for value in unacked]:
        message = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        ids.add(str((message.get("headers") or {}).get("id", "")))
    return ids


class LostMessages:
    """Sends again the queued jobs whose message the broker no longer holds.

    A Redis restarted without persistence (the default install's private one) forgets every
    message it held. A job whose message is missing at two heartbeats in a row is sent again:
    one look could fall between the web app saving the row and sending its message, or
    between the worker taking a message and recording its delivery. A message sent twice
    still runs its job once: only a queued job starts. What is sent again is the message the
    web app stored with the job, byte for byte (``sendable``, ``service.send``).
    """

    def __init__(self) -> None:
        self.missing: set[int] = set()

    def resend(self, host: Host) -> int:
        from webui.jobs.service import BrokerUnavailable, send

        queued = sendable(host)
        present = broker_task_ids(host.queue) if queued else set()
        if present is None:
            return 0  # the broker cannot be read now: nothing is known to be lost
        missing = {job.pk for job in queued if job.task_id not in present}
        count = 0
        for job in queued:
            if job.pk in missing and job.pk in self.missing:
                try:
                    send(job)
                except BrokerUnavailable:
                    logger.warning("could not send job %s again", job.pk)
                    continue
                missing.discard(job.pk)
                count += 1
        self.missing = missing
        if count:
            logger.warning("sent %d queued job(s) again: the broker had lost their messages", count)
        return count


def sendable(host: Host) -> list[Job]:
    """The queued jobs of ``host`` a worker may send again: those with a stored message for this host's queue.

    Any other queued row (no stored message, or one a database writer pointed elsewhere) is
    left as it is; the heartbeat expires it, saying why (service.expire_stale).
    """
    from webui.jobs.signed import StoredMessage

    jobs = []
    for job in Job.objects.filter(host=host, state=State.QUEUED).select_related("host").order_by("id"):
        stored = StoredMessage.parse(job.signed_message)
        if stored is not None and stored.queue == host.queue:
            jobs.append(job)
        else:
            logger.warning("queued job %s has no message signed by the web app for %s: not sent", job.pk, host.queue)
    return jobs


def resend_queued(host: Host) -> int:
    from webui.jobs.service import BrokerUnavailable, send

    count = 0
    for job in sendable(host):
        try:
            send(job)
            count += 1
        except BrokerUnavailable:
            logger.warning("could not resend queued job %s", job.pk)
    return count
