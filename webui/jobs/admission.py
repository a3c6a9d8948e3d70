"""Whether a task message may start its job, on this worker, now (the runner asks before anything acts).

A message that passes the schema (messages.validate_arguments) and the signature check is
still refused, audited with the reason (messages.refuse_message), when it is signed for
another host, names a job that does not exist or that it does not match (action, host,
arguments, and its issue time against the row's creation: a row changed after the web app
signed it), or a job that is no longer queued (a duplicate or a replay). A job that is
queued but that its creator may no longer run is closed refused; one whose message was
issued longer than PASSTHROUGH_JOB_MAX_WAIT ago is closed expired, so an old message finds
nothing to run however its row was set back to queued. A younger message finds the worker's
pool process remembering the jobs it let start (``_started``): one for such a job is refused
though its row says queued again, which closes the window the expiry leaves (the memory
goes with the process: a worker restart, a crash, a hard time limit).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from webui.jobs.closing import close_queued
from webui.jobs.messages import refuse_message, task_arguments
from webui.jobs.models import Job, State

# How far a message's signed issue time may be from its job row's creation: they are the same
# moment (messages.issued_at); this only absorbs a database that keeps less than microseconds.
ISSUED_TOLERANCE = 1.0

# Job id -> its message's issue time, for the jobs this process let start in the last
# PASSTHROUGH_JOB_MAX_WAIT seconds (older messages are refused for their age).
_started: dict[int, float] = {}


def _matches(job: Job, action: str, arguments: dict[str, Any]) -> str | None:
    """Why a message does not belong to its job, or None when it does."""
    if job.action != action:
        return f"job {job.pk} is a {job.action} job, not {action}"
    if job.host.name != settings.PASSTHROUGH_HOSTNAME:
        return f"job {job.pk} is for host {job.host.name}, and this worker runs on {settings.PASSTHROUGH_HOSTNAME}"
    saved = task_arguments(job)
    if abs(saved.pop("issued_at") - arguments["issued_at"]) > ISSUED_TOLERANCE:
        return (
            f"it was issued at {_moment(arguments['issued_at'])}, and job {job.pk} was created at "
            f"{_moment(job.created.timestamp())}: the job's row was changed after the web app signed it"
        )
    if saved != {name: value for name, value in arguments.items() if name != "issued_at"}:
        return f"the message's arguments differ from those job {job.pk} was saved with"
    return None


def _moment(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def admit(action: str, arguments: dict[str, Any]) -> Job | None:
    """The queued job this message may start now, or None: the message was refused or the job closed, with words."""
    if arguments["host"] != settings.PASSTHROUGH_HOSTNAME:
        # Signed for another host: re-pointed at this host's queue (and perhaps at a row changed to match).
        refuse_message(
            action,
            f"Refused a {action} message for job {arguments['job_id']}: it is for host {arguments['host']}, "
            f"and this worker runs on {settings.PASSTHROUGH_HOSTNAME}.",
            arguments,
        )
        return None
    job = Job.objects.select_related("host", "user").filter(pk=arguments["job_id"]).first()
    if job is None:
        refuse_message(
            action, f"Refused a {action} message for job {arguments['job_id']}, which does not exist.", arguments
        )
        return None
    mismatch = _matches(job, action, arguments)
    if mismatch:
        refuse_message(action, f"Refused a {action} message: {mismatch}.", arguments)
        return None
    if job.state != State.QUEUED:
        # Sent again at worker start, or replayed from the broker: either way it runs nothing.
        refuse_message(
            action,
            f"Refused a {action} message for job {job.pk}, which is {job.state}, not queued: "
            "a duplicate or replayed message.",
            arguments,
        )
        return None
    problem = authorization_problem(job)
    if problem:
        close_queued(job, State.FAILED, "refused", f"Not run: {problem}", actor="worker")
        return None
    # Measured from the signed issue time, which the row's creation matches (checked above): a
    # message issued too long ago is not run, however its row was set back to queued.
    waited = timezone.now() - datetime.datetime.fromtimestamp(arguments["issued_at"], datetime.UTC)
    limit = datetime.timedelta(seconds=settings.PASSTHROUGH_JOB_MAX_WAIT)
    if waited > limit:
        close_queued(
            job,
            State.EXPIRED,
            "expired",
            f"Not run: the job waited {_minutes(waited)} for {job.host.name}'s worker, longer than the "
            f"{_minutes(limit)} a job may wait. Nothing was changed; start it again if it is still wanted.",
            actor="worker",
        )
        return None
    if job.pk in _started:
        refuse_message(
            action,
            f"Refused a {action} message for job {job.pk}, which this worker has started already; its row "
            "was set back to queued since: a replayed message.",
            arguments,
        )
        return None
    _remember(job.pk, arguments["issued_at"])
    return job


def _remember(job_id: int, issued_at: float) -> None:
    oldest = timezone.now().timestamp() - settings.PASSTHROUGH_JOB_MAX_WAIT - ISSUED_TOLERANCE
    for known in [known for known, issued in _started.items() if issued < oldest]:
        del _started[known]
    _started[job_id] = issued_at


def authorization_problem(job: Job) -> str | None:
    """Why the job's creator may no longer run it, or None. Checked when the job starts, not only when it was sent."""
    from webui.accounts.roles import can_operate

    user = job.user  # read with the job, just now (run_job's select_related)
    if user is None:
        return f"job {job.pk} names no user who may run it (web jobs always do)."
    if not user.is_active:
        return f"{user.username}'s account was deactivated after the job was queued."
    if not can_operate(user):
        return f"{user.username} is no longer an operator (may no longer run jobs)."
    return None


def _minutes(delta: datetime.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return f"{int(delta.total_seconds())} seconds"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
