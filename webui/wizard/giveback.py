"""Giving a group on vfio-pci back to the host: which bind job took it, and whether it was given back.

A bind job records what each function was on before (``views.jobs.previous_drivers``),
and giving back restores exactly that. The job page offers it from the bind job, the
devices and device pages from the group; both go through the bind job found here. A bind
whose group was given back since (by a later restore_driver job that did not fail) is
given back no more: :func:`given_back_by` names the job that did it.
"""

from __future__ import annotations

from webui.hosts.models import Host
from webui.jobs.models import Action, Job, State

# A restore_driver job in these states has given the group back, or is about to.
GIVING_BACK = (State.QUEUED, State.RUNNING, State.SUCCEEDED)


def _functions(job: Job) -> set[str]:
    """Every function a job names: its targets, those it acted on, those it recorded."""
    result = job.result or {}
    before = (result.get("state_before") or {}).get("functions") or {}
    return set(job.targets) | set(result.get("targets") or []) | set(before)


def _same_group(bind: Job, other: Job) -> bool:
    if bind.group is not None and other.group is not None:
        return bind.group == other.group
    return bool(_functions(bind) & _functions(other))


def given_back_by(job: Job) -> Job | None:
    """The restore_driver job that gave back (or is giving back) what the bind ``job`` took, or None.

    The first such job on the same host and IOMMU group after it; one that failed, was rolled
    back, expired or was cancelled left the group on vfio-pci, so it does not count.
    """
    if job.action != Action.BIND_VFIO:
        return None
    later = Job.objects.filter(
        host_id=job.host_id, action=Action.RESTORE_DRIVER, state__in=GIVING_BACK, pk__gt=job.pk
    ).order_by("pk")
    return next((other for other in later.iterator() if _same_group(job, other)), None)


def bind_job_of(host: Host, group: int) -> Job | None:
    """The bind job whose record a give-back of ``group`` restores: its latest, unless given back since.

    None when the group went to vfio-pci another way (binding at boot, by hand): then the
    kernel picks the drivers it gets back.
    """
    job = (
        Job.objects.filter(host=host, action=Action.BIND_VFIO, state=State.SUCCEEDED, group=group)
        .order_by("-pk")
        .first()
    )
    return job if job is not None and given_back_by(job) is None else None
