"""A job for a host that is offline says so at once, waits, and expires saying so; other hosts go on.

A host is offline when its worker has not been heard from (registration, heartbeat,
snapshot) for longer than PASSTHROUGH_OFFLINE_AFTER. Its own worker cannot expire its jobs,
so any other host's worker does at its heartbeat, touching nothing but the job's row.
"""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from passthrough.hosttrees.tree import write_tree
from tests.test_jobs_worker import gpu_host
from tests.worker_support import operator_named, requires_redis, wait_for_job
from webui.audit.models import AuditEvent
from webui.hosts.models import Host
from webui.jobs.models import Job, State
from webui.jobs.service import expire_stale, submit


def _seen(name: str, ago: datetime.timedelta | None) -> Host:
    return Host.objects.create(name=name, last_seen=None if ago is None else timezone.now() - ago)


@pytest.mark.django_db
def test_a_host_is_offline_after_the_setting_and_not_before(settings):
    settings.PASSTHROUGH_OFFLINE_AFTER = 90
    now = timezone.now()
    host = Host(name="pve2", last_seen=now - datetime.timedelta(seconds=90))
    assert not host.is_offline_at(now)
    assert host.is_offline_at(now + datetime.timedelta(seconds=1))
    assert Host(name="never").is_offline_at(now)
    assert host.absence(now + datetime.timedelta(minutes=3)) == "pve2 has not been seen for 4 minutes"
    assert host.absence(now) == "pve2 has not been seen for 90 seconds"
    assert Host(name="never").absence(now) == "never's worker has never reported"


@pytest.mark.django_db
def test_a_job_for_an_offline_host_says_so_at_once_and_one_for_an_online_host_does_not(test_broker, settings):
    settings.PASSTHROUGH_OFFLINE_AFTER = 90
    offline = _seen("pve2", datetime.timedelta(minutes=4, seconds=10))
    online = _seen("pve1", datetime.timedelta(seconds=20))
    user = operator_named("olga")
    waiting = submit(host=offline, action="scan", targets=[], user=user)
    assert waiting.message == "pve2 has not been seen for 4 minutes; the job waits for it until it expires."
    waiting.refresh_from_db()
    assert waiting.state == State.QUEUED
    assert waiting.message == "pve2 has not been seen for 4 minutes; the job waits for it until it expires."
    assert submit(host=online, action="scan", targets=[], user=user).message == ""


@pytest.mark.django_db
def test_an_expired_job_of_an_offline_host_keeps_saying_why(test_broker, settings):
    settings.PASSTHROUGH_OFFLINE_AFTER = 90
    host = _seen("pve2", datetime.timedelta(minutes=4))
    job = submit(host=host, action="scan", targets=[], user=operator_named("olga"))
    Job.objects.filter(pk=job.pk).update(created=timezone.now() - datetime.timedelta(minutes=11))
    Host.objects.filter(pk=host.pk).update(last_seen=timezone.now() - datetime.timedelta(minutes=15))
    host.refresh_from_db()
    assert expire_stale(host, 600) == 1
    job.refresh_from_db()
    assert job.state == State.EXPIRED
    assert job.message == (
        "Not run: pve2 has not been seen for 15 minutes; the job waited more than 10 minutes for pve2's worker "
        "and expired. Nothing was changed; start it again if it is still wanted."
    )
    assert AuditEvent.objects.filter(job_id=job.pk, result="expired").get().error == job.message


@requires_redis
@pytest.mark.worker
def test_another_hosts_worker_expires_an_offline_hosts_jobs_and_runs_its_own(start_worker, tmp_path, settings):
    settings.PASSTHROUGH_OFFLINE_AFTER = 3
    user = operator_named("olga")
    gone = _seen("pve2", datetime.timedelta(minutes=30))
    stale = submit(host=gone, action="scan", targets=[], user=user)
    fresh = submit(host=gone, action="scan", targets=[], user=user)
    assert stale.message == "pve2 has not been seen for 30 minutes; the job waits for it until it expires."
    Job.objects.filter(pk=stale.pk).update(created=timezone.now() - datetime.timedelta(minutes=11))

    root = write_tree(gpu_host(), tmp_path / "pve1")
    start_worker(
        root, "pve1", PASSTHROUGH_HEARTBEAT_SECONDS="1", PASSTHROUGH_OFFLINE_AFTER="3", PASSTHROUGH_JOB_MAX_WAIT="600"
    )
    own = wait_for_job(
        submit(
            host=Host.objects.get(name="pve1"),
            action="bind_vfio",
            targets=["0000:01:00.0"],
            parameters={"release_console": False},
            user=user,
        )
    )
    assert own.state == State.SUCCEEDED, own.message
    stale = wait_for_job(stale, timeout=15)  # pve1's next heartbeat
    assert stale.state == State.EXPIRED
    assert stale.message.startswith("Not run: pve2 has not been seen for 30 minutes; the job waited more than")
    fresh.refresh_from_db()
    assert fresh.state == State.QUEUED, "a job that has not waited too long keeps waiting for its host"
    assert AuditEvent.objects.filter(job_id=stale.pk, result="expired", actor="worker").count() == 1
