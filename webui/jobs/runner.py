"""Running a job on the root worker: the bridge from a Job row to passthrough.ops.

``run_job`` asks ``admission`` whether the message may start its job (for this host, a
queued job it matches, a creator who may still run it, not issued too long ago), marks it
running under this process as its owner, calls the operation with a progress callback that writes
each step to the row (the page polls it), then stores a fresh snapshot of the host and, in
one transaction, the outcome, its audit event and the release of the group lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.utils import timezone

from passthrough import ops
from passthrough.errors import PassthroughError
from passthrough.host import HostTree
from passthrough.ops.result import OperationResult, Step
from webui.audit.models import record
from webui.hosts.models import Snapshot
from webui.hosts.snapshots import take_snapshot
from webui.hosts.trees import worker_tree
from webui.jobs import owner, reset_operations, vm_operations
from webui.jobs.admission import admit
from webui.jobs.closing import JobRefused
from webui.jobs.models import VM_ACTIONS, Action, GroupLock, Job, State

logger = logging.getLogger(__name__)

OUTCOME_STATES = {
    ops.SUCCEEDED: State.SUCCEEDED,
    ops.UNCHANGED: State.SUCCEEDED,
    ops.ROLLED_BACK: State.ROLLED_BACK,
    ops.FAILED: State.FAILED,
}


class _StepWriter:
    """Writes steps to the job row as they start and end, so the page shows them live."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.steps: list[dict[str, Any]] = list(job.steps)
        self.first = len(self.steps)
        self.index: dict[int, int] = {}

    def __call__(self, step: Step) -> None:  # a Progress callback, as passthrough.ops calls it
        position = self.index.get(id(step))
        if position is None:
            self.index[id(step)] = len(self.steps)
            self.steps.append(step.to_json())
        else:
            self.steps[position] = step.to_json()
        Job.objects.filter(pk=self.job.pk).update(steps=self.steps)


def run_job(action: str, arguments: dict[str, Any]) -> None:
    job = admit(action, arguments)
    if job is None:
        return
    # Only a queued job starts; the owner lets the reconciler tell a running job from an abandoned one.
    me = str(owner.current())
    if not Job.objects.filter(pk=job.pk, state=State.QUEUED).update(
        state=State.RUNNING, started=timezone.now(), owner=me
    ):
        logger.info("job %s was closed before it could start: message ignored", job.pk)
        return
    job.refresh_from_db()
    execute(job, worker_tree())


def execute(job: Job, tree: HostTree, source: str = "worker") -> Job:
    """Run a job that is marked running, on ``tree``; always closes it. Also used by the shell commands."""
    writer = _StepWriter(job)
    result: OperationResult | None = None
    message = ""
    try:
        result = OPERATIONS[job.action](tree, job, writer)
    except PassthroughError as error:
        message = str(error)
        state, audit_result, error_text = State.FAILED, "refused", message
    except Exception as error:  # a bug must still close the job and leave a record
        logger.exception("job %s crashed", job.pk)
        message = f"The job stopped on an unexpected error ({type(error).__name__}); the worker log has the details."
        state, audit_result, error_text = State.FAILED, "failed", message
    if result is not None:
        state = OUTCOME_STATES.get(result.outcome or "", State.FAILED)
        audit_result = result.outcome or "failed"
        error_text = _error_text(result)
        message = _message(job, result)

    snapshot = snapshot_step(job, tree, writer, reason=f"after job {job.pk}")
    # The outcome, its audit event and the lock's release commit together or not at all; only
    # the owner closes its job, so a job never has two outcomes.
    with transaction.atomic():
        closed = Job.objects.filter(pk=job.pk, state=State.RUNNING, owner=job.owner).update(
            state=state,
            finished=timezone.now(),
            result=result.to_json() if result is not None else None,
            message=message,
            steps=writer.steps,
            snapshot=snapshot,
        )
        if closed:
            GroupLock.objects.filter(job_id=job.pk).delete()
            record(
                actor=job.actor,
                user=job.user,
                source=source,
                host=job.host.name,
                action=job.action,
                targets=result.targets if result is not None and result.targets else job.targets,
                parameters=job.parameters,
                state_before=result.state_before if result is not None else None,
                state_after=result.state_after if result is not None else None,
                result=audit_result,
                error=error_text,
                job_id=job.pk,
            )
    if not closed:
        logger.error("job %s was closed by someone else while it ran; its outcome here is not recorded", job.pk)
    job.refresh_from_db()
    return job


def snapshot_step(job: Job, tree: HostTree, report: Callable[[Step], None], reason: str) -> Snapshot | None:
    """The step every job ends with: read the host back and store it. Reported as it starts and ends."""
    step = Step(name="snapshot", target=job.host.name, started=time.time())
    report(step)
    try:
        snapshot = take_snapshot(job.host, tree, Snapshot.Source.JOB, reason=reason)
    except Exception as error:  # the job's own outcome stands; the page says the picture may be stale
        logger.exception("snapshot after job %s failed", job.pk)
        step.ok, step.detail, snapshot = False, f"Could not read the host back: {error}", None
    else:
        step.ok, step.detail = True, f"{len(snapshot.inventory.get('devices', []))} functions read"
    step.finished = time.time()
    report(step)
    return snapshot


def _error_text(result: OperationResult) -> str:
    if not result.error:
        return ""
    text = str(result.error.get("message", ""))
    if result.error.get("rollback"):
        text += " " + str(result.error["rollback"])
    return text.strip()


def _message(job: Job, result: OperationResult) -> str:
    targets = ", ".join(result.targets or job.targets)  # none for a job on the whole host (a scan)
    if result.outcome == ops.UNCHANGED:
        return f"Nothing to do: {targets or 'the host'} already as asked."
    if result.outcome == ops.SUCCEEDED:
        return f"{job.get_action_display()} done{f' for {targets}' if targets else ''}." + _warnings(result)
    if result.outcome == ops.ROLLED_BACK:
        return f"{job.get_action_display()} failed and every change was undone: {_error_text(result)}"
    return f"{job.get_action_display()} failed: {_error_text(result)}"


def _warnings(result: OperationResult) -> str:
    return "".join(f" {warning}" for warning in result.warnings)


# Action -> how to call passthrough.ops with the job's saved arguments.
def _bind(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    return ops.bind_vfio(
        tree,
        job.targets[0],
        confirm=job.parameters.get("confirm"),
        release_console=bool(job.parameters.get("release_console", False)),
        progress=progress,
    )


def _restore(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    return ops.restore_driver(
        tree,
        job.targets[0],
        previous_drivers=job.parameters.get("previous_drivers"),
        released_console=job.parameters.get("released_console"),
        progress=progress,
    )


def _reset(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    parameters = job.parameters
    return ops.reset(
        tree, job.targets[0], method=parameters.get("method"), confirm=parameters.get("confirm"), progress=progress
    )


def _sriov(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    parameters = job.parameters
    return ops.set_sriov_vfs(
        tree, job.targets[0], parameters.get("count"), confirm=parameters.get("confirm"), progress=progress
    )


def _scan(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    # The snapshot every job ends with is the whole of a scan job.
    return OperationResult("scan", targets=[], outcome=ops.SUCCEEDED)


def _persist(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    from passthrough.ops import persist

    parameters = job.parameters
    return persist.apply_persist_binding(
        tree,
        job.targets,
        native_drivers=parameters.get("native_drivers"),
        confirm=parameters.get("confirm"),
        fingerprint=parameters.get("fingerprint"),
        progress=progress,
    )


def _unpersist(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    from passthrough.ops import persist

    return persist.apply_unpersist_binding(
        tree, job.targets, fingerprint=job.parameters.get("fingerprint"), progress=progress
    )


def _cmdline(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    from passthrough.ops import persist

    parameters = job.parameters
    return persist.apply_kernel_cmdline(
        tree,
        add=parameters.get("add", []),
        remove=parameters.get("remove", []),
        fingerprint=parameters.get("fingerprint"),
        progress=progress,
    )


def _initramfs(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    from passthrough.ops import persist

    return persist.apply_rebuild_initramfs(tree, progress=progress)


def _plan(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    """Read-only: the diff a persistence job would write, for the user to look at first."""
    from passthrough.ops import persist
    from passthrough.ops.result import Recorder

    parameters = job.parameters
    change = parameters.get("change")
    result = OperationResult("plan_change", targets=list(job.targets), parameters=dict(parameters))
    with Recorder(result, progress).step("plan", change):
        if change == Action.PERSIST_BINDING:
            plan = persist.plan_persist_binding(
                tree, job.targets, native_drivers=parameters.get("native_drivers"), confirm=parameters.get("confirm")
            )
        elif change == Action.UNPERSIST_BINDING:
            plan = persist.plan_unpersist_binding(tree, job.targets)
        elif change == Action.SET_KERNEL_CMDLINE:
            plan = persist.plan_kernel_cmdline(tree, parameters.get("add", []), parameters.get("remove", []))
        elif change == Action.REBUILD_INITRAMFS:
            plan = persist.plan_rebuild_initramfs(tree)
        else:
            raise JobRefused(f"{change!r} is not a change that can be planned.")
    result.plan = plan.to_json()
    result.outcome = ops.SUCCEEDED
    return result


def _undo(tree: HostTree, job: Job, progress: _StepWriter) -> OperationResult:
    undone = Job.objects.filter(pk=job.parameters.get("undo_of"), host=job.host).first()
    record = (undone.result or {}).get("undo") if undone is not None else None
    if record is None:
        raise JobRefused(
            f"Job {job.parameters.get('undo_of')} on {job.host.name} left nothing to undo.",
            hint="A finished persistence job (bind at boot, kernel command line) or VM change can be undone.",
        )
    force = bool(job.parameters.get("force", False))
    if undone is not None and undone.action in VM_ACTIONS:
        return vm_operations.undo(tree, record, force, progress)
    return ops.undo_change(tree, record, force=force, progress=progress)


OPERATIONS = {
    Action.SCAN: _scan,
    Action.BIND_VFIO: _bind,
    Action.RESTORE_DRIVER: _restore,
    Action.RESET: _reset,
    Action.TEST_RESET: reset_operations.reset_test,
    Action.SET_SRIOV_VFS: _sriov,
    Action.PERSIST_BINDING: _persist,
    Action.UNPERSIST_BINDING: _unpersist,
    Action.SET_KERNEL_CMDLINE: _cmdline,
    Action.REBUILD_INITRAMFS: _initramfs,
    Action.PLAN_CHANGE: _plan,
    Action.UNDO_CHANGE: _undo,
    Action.VM_ATTACH: vm_operations.attach,
    Action.VM_DETACH: vm_operations.detach,
    Action.VM_DEFINE: vm_operations.define,
}
