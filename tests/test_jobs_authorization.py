"""A job runs only for someone who may still run it, only while it is fresh, and has exactly one outcome."""

from __future__ import annotations

import datetime
from unittest import mock

import pytest
from django.utils import timezone

from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.pci.scan import scan
from tests.test_jobs_worker import gpu_host
from tests.web_support import signed_in
from tests.worker_support import operator_named, requires_redis, wait_for_job
from webui.accounts.roles import VIEWER, set_role
from webui.audit.models import AuditEvent
from webui.hosts.models import Host
from webui.hosts.snapshots import take_snapshot, this_host
from webui.jobs import owner
from webui.jobs.models import GroupLock, Job, State
from webui.jobs.reconcile import reconcile
from webui.jobs.runner import execute
from webui.jobs.service import create_job, expire_stale, send, submit

BIND = {"confirm": None, "release_console": False}


def _outcomes(job: Job) -> list[str]:
    """The job's outcome events (a refused message that named the job is a broker_message event, not an outcome)."""
    events = AuditEvent.objects.filter(job_id=job.pk, action=job.action).exclude(result="requested")
    return list(events.values_list("result", flat=True))


def _queued(host: Host, username: str) -> Job:
    return create_job(
        host=host,
        action="bind_vfio",
        targets=["0000:01:00.0"],
        parameters=BIND,
        user=operator_named(username),
        actor=username,
    )


@requires_redis
@pytest.mark.worker
def test_jobs_whose_creator_lost_the_right_or_that_waited_too_long_are_not_run(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    start_worker(root, "gpuhost")
    host = Host.objects.get(name="gpuhost")

    deactivated = _queued(host, "dora")
    dora = deactivated.user
    dora.is_active = False
    dora.save()
    send(deactivated)
    deactivated = wait_for_job(deactivated)
    assert deactivated.state == State.FAILED
    assert deactivated.message == "Not run: dora's account was deactivated after the job was queued."

    demoted = _queued(host, "dan")
    set_role(demoted.user, VIEWER)
    send(demoted)
    demoted = wait_for_job(demoted)
    assert demoted.state == State.FAILED and "dan is no longer an operator" in demoted.message

    # Saved and signed 11 minutes ago (a row aged afterwards no longer matches its signed message).
    eleven_minutes_ago = timezone.now() - datetime.timedelta(minutes=11)
    with mock.patch("django.utils.timezone.now", return_value=eleven_minutes_ago):
        stale = _queued(host, "stella")
    send(stale)
    stale = wait_for_job(stale)
    assert stale.state == State.EXPIRED
    assert "waited 11 minutes" in stale.message and "longer than the 10 minutes" in stale.message

    for job in (deactivated, demoted, stale):
        assert _outcomes(job) == (["expired"] if job is stale else ["refused"])
    assert scan(root).device("0000:01:00.0").driver == "nouveau", "nothing ran"
    assert not GroupLock.objects.exists()


@requires_redis
@pytest.mark.worker
def test_an_operator_cancels_a_queued_job_and_its_message_then_runs_nothing(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    start_worker(root, "gpuhost")
    host = Host.objects.get(name="gpuhost")
    job = _queued(host, "carl")
    client = signed_in(job.user)
    assert "Cancel this job" in client.get(f"/jobs/{job.pk}/").content.decode()
    response = client.post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert "was cancelled before it started" in response.content.decode()
    job.refresh_from_db()
    assert job.state == State.CANCELLED and not GroupLock.objects.exists()
    send(job)  # as a message already on its way would arrive
    second = client.post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert "is cancelled, not queued: it cannot be cancelled" in second.content.decode()
    # The next job of the same group runs: the cancelled one's lock is gone and its message ran nothing.
    after = wait_for_job(
        submit(host=host, action="bind_vfio", targets=["0000:01:00.0"], parameters=BIND, user=job.user)
    )
    assert after.state == State.SUCCEEDED
    assert _outcomes(job) == ["cancelled"]


def _shell_bind(settings, tmp_path, hostname: str):  # type: ignore[no-untyped-def]
    """A root shell's `manage.py device bind` on a GPU tree: created running, owned by this (live) process."""
    settings.PASSTHROUGH_HOSTNAME = hostname
    settings.PASSTHROUGH_KERNEL = "double"
    double = KernelDouble(write_tree(gpu_host(), tmp_path / "host"))
    host = this_host()
    take_snapshot(host, double, "startup")
    job = create_job(
        host=host,
        action="bind_vfio",
        targets=["0000:01:00.0"],
        parameters=BIND,
        actor="shell:root",
        state=State.RUNNING,
    )
    return host, double, job


@pytest.mark.django_db(transaction=True)
def test_the_reconciler_leaves_a_job_whose_owner_still_runs(settings, tmp_path):
    host, double, shell_job = _shell_bind(settings, tmp_path, "recon")
    assert not owner.is_gone(shell_job.owner)
    assert reconcile(host, double) == []
    shell_job.refresh_from_db()
    assert shell_job.state == State.RUNNING and AuditEvent.objects.count() == 0

    # Once its process is gone (a pid that does not run), the reconciler closes it, once.
    me = owner.current()
    Job.objects.filter(pk=shell_job.pk).update(owner=f"{me.machine} {me.boot} 999999999 {me.start}")
    [closed] = reconcile(host, double)
    assert closed.state == State.ROLLED_BACK
    assert _outcomes(closed) == ["rolled_back"]


@pytest.mark.django_db(transaction=True)
def test_a_job_closed_by_someone_else_gets_no_second_outcome(settings, tmp_path):
    _, double, job = _shell_bind(settings, tmp_path, "twice")
    # Another owner took the row over (as a reconciler would after deciding this one was gone).
    Job.objects.filter(pk=job.pk).update(owner="elsewhere boot 1 1")
    job.refresh_from_db()
    Job.objects.filter(pk=job.pk).update(state=State.ROLLED_BACK)
    execute(job, double, source="shell")
    job.refresh_from_db()
    assert job.state == State.ROLLED_BACK and _outcomes(job) == []


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_expires_jobs_no_worker_took():
    host = Host.objects.create(name="silent")
    job = _queued(host, "quinn")
    Job.objects.filter(pk=job.pk).update(created=timezone.now() - datetime.timedelta(minutes=20))
    fresh = create_job(host=host, action="scan", targets=[], user=job.user, actor="quinn")
    assert expire_stale(host, 600) == 1
    job.refresh_from_db()
    fresh.refresh_from_db()
    assert job.state == State.EXPIRED and fresh.state == State.QUEUED
    assert "waited more than 10 minutes for silent's worker" in job.message
    assert _outcomes(job) == ["expired"]


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[-1].split()[0]


def test_a_zombie_owner_is_gone():
    """A worker killed with its pool process leaves that process a zombie until it is reaped."""
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 10
    while _state(child.pid) != "Z":  # exited, not yet reaped (wait() is not called yet)
        assert time.time() < deadline, "the child never exited"
        time.sleep(0.01)
    me = owner.current()
    with open(f"/proc/{child.pid}/stat") as stat:
        started = stat.read().rsplit(")", 1)[-1].split()[19]
    recorded = f"{me.machine} {me.boot} {child.pid} {started}"
    assert owner.is_gone(recorded), "an unreaped zombie runs no code and owns nothing"
    assert not owner.is_gone(str(me))
    child.wait()
    assert owner.is_gone(recorded)
