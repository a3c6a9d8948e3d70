"""Closing a job that never started, and the refusal that keeps one from being made or run.

Shared by the web process (service: cancelled, never sent, expired) and the worker (runner:
refused, expired): imports only the jobs' models and the audit, so neither imports the other.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from passthrough.errors import PassthroughError
from webui.audit.models import record
from webui.jobs.models import GroupLock, Job, State


class JobRefused(PassthroughError):
    code = "job_refused"


def close_queued(
    job: Job, state: str, audit_result: str, message: str, *, actor: str, user: Any = None, source: str = "worker"
) -> bool:
    """End a job that has not started (expired, cancelled, refused, never sent): row, lock and audit in one go.

    False when the job was no longer queued (it started, or someone else closed it): then nothing changes.
    """
    with transaction.atomic():
        if not Job.objects.filter(pk=job.pk, state=State.QUEUED).update(
            state=state, finished=timezone.now(), message=message
        ):
            return False
        GroupLock.objects.filter(job=job).delete()
        record(
            actor=actor,
            user=user,
            source=source,
            host=job.host.name,
            action=job.action,
            targets=job.targets,
            parameters=job.parameters,
            result=audit_result,
            error=message,
            job_id=job.pk,
        )
    return True
