"""What someone who can write the database (root on any host: every worker has DATABASE_URL) can make a worker run.

Against a real Redis and a real worker: a queued job row written straight into the database
is never sent by the worker, never run, and expires saying it has no message signed by the
web app; a genuine message replayed onto its job row set back to queued after it ran runs
nothing (the worker remembers starting it, or it is too old to run, or its row no longer
matches what was signed); a genuine message
re-pointed at another host's queue and job row is refused there. The device is untouched
each time.
"""

from __future__ import annotations

import dataclasses
import datetime
import time

import pytest
from django.utils import timezone

from passthrough.hosttrees.tree import write_tree
from passthrough.pci.scan import scan
from tests.test_jobs_worker import gpu_host
from tests.worker_support import operator_named, requires_redis, wait_for_job
from webui.audit.models import AuditEvent, RefusalBurst
from webui.hosts.models import Host
from webui.jobs.models import Job, State
from webui.jobs.service import send, submit
from webui.jobs.signed import StoredMessage, publish

pytestmark = [requires_redis, pytest.mark.worker]

GPU, GPU_AUDIO = "0000:01:00.0", "0000:01:00.1"
BIND = {"confirm": None, "release_console": False}
NO_MESSAGE = (
    "Not run: the job has no message signed by the web app (it was made by an older version, or written into "
    "the database by hand), so no worker sends it. Nothing was changed. Submit it again from the web app if it "
    "is still wanted."
)


def _outcomes(job: Job) -> list[str]:
    events = AuditEvent.objects.filter(job_id=job.pk, action=job.action).exclude(result="requested")
    return list(events.order_by("id").values_list("result", flat=True))


def _written_into_the_database(host: Host) -> Job:
    """A queued bind row as a database writer makes it: everything a genuine one has but a signed message."""
    user = operator_named("otto")
    return Job.objects.create(
        host=host, user=user, actor=user.username, action="bind_vfio", targets=[GPU], parameters=BIND
    )


def _wait_refused(count: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while sum(RefusalBurst.objects.values_list("count", flat=True)) < count and time.time() < deadline:
        time.sleep(0.05)
    assert sum(RefusalBurst.objects.values_list("count", flat=True)) == count


def test_a_queued_row_written_into_the_database_is_never_run_and_expires_saying_why(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    host = Host.objects.create(name="gpuhost")
    before_start = _written_into_the_database(host)  # the worker sends queued jobs again at its start
    worker = start_worker(root, "gpuhost", PASSTHROUGH_HEARTBEAT_SECONDS="1", PASSTHROUGH_JOB_MAX_WAIT="3")
    while_running = _written_into_the_database(host)  # and at each heartbeat, those whose message is missing

    for job in (before_start, while_running):
        wait_for_job(job, timeout=30)
        assert job.state == State.EXPIRED and job.message == NO_MESSAGE, job.message
        assert _outcomes(job) == ["expired"] and job.steps == []
    assert scan(root).device(GPU).driver == "nouveau" and scan(root).device(GPU_AUDIO).driver == "snd_hda_intel"
    assert not RefusalBurst.objects.exists(), "no message was ever sent for them"
    assert f"queued job {while_running.pk} has no message signed by the web app" in worker.log.read_text()
    assert worker.process.poll() is None


def test_a_genuine_message_replayed_onto_its_row_set_back_to_queued_runs_nothing(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    worker = start_worker(root, "gpuhost", PASSTHROUGH_JOB_MAX_WAIT="6")  # bind and restore start well within it
    host = Host.objects.get(name="gpuhost")
    user = operator_named("otto")
    bind = wait_for_job(submit(host=host, action="bind_vfio", targets=[GPU], parameters=BIND, user=user))
    assert bind.state == State.SUCCEEDED, bind.message
    back = {"previous_drivers": {GPU: "nouveau", GPU_AUDIO: "snd_hda_intel"}, "released_console": None}
    restore = wait_for_job(submit(host=host, action="restore_driver", targets=[GPU], parameters=back, user=user))
    assert restore.state == State.SUCCEEDED, restore.message
    assert scan(root).device(GPU).driver == "nouveau"
    steps = bind.steps

    # Set back to queued at once and replayed (its stored message, as a worker's resend, or
    # anyone who kept a copy, publishes it): the worker remembers having started it.
    Job.objects.filter(pk=bind.pk).update(state=State.QUEUED, finished=None, message="")
    send(bind)
    _wait_refused(1)
    refusal = AuditEvent.objects.get(action="broker_message")
    assert refusal.error == (
        f"Refused a bind_vfio message for job {bind.pk}, which this worker has started already; its row was set "
        "back to queued since: a replayed message."
    )
    assert Job.objects.get(pk=bind.pk).state == State.QUEUED and scan(root).device(GPU).driver == "nouveau"

    # Replayed again once its message is older than the worker's PASSTHROUGH_JOB_MAX_WAIT: it expires.
    while timezone.now() - bind.created < datetime.timedelta(seconds=6.5):
        time.sleep(0.1)
    Job.objects.filter(pk=bind.pk).update(state=State.QUEUED, finished=None, message="")
    send(bind)
    bind = wait_for_job(bind)
    assert bind.state == State.EXPIRED, bind.message
    assert bind.message.startswith("Not run: the job waited ") and "longer than the 6 seconds" in bind.message
    assert bind.steps == steps, "nothing ran"
    assert _outcomes(bind) == ["succeeded", "expired"]

    # Set back to queued and made to look fresh: the row no longer matches the signed issue time.
    Job.objects.filter(pk=bind.pk).update(state=State.QUEUED, finished=None, message="", created=timezone.now())
    send(bind)
    _wait_refused(2)  # counted in the minute the first refusal opened; its words are in the worker's log
    said = f"Refused a bind_vfio message: it was issued at {bind.created:%Y-%m-%d %H:%M:%S} UTC, and job {bind.pk}"
    assert said in worker.log.read_text() and "the job's row was changed after the web app signed it" in (
        worker.log.read_text()
    )
    bind.refresh_from_db()
    assert bind.state == State.QUEUED and bind.steps == steps
    assert scan(root).device(GPU).driver == "nouveau" and scan(root).device(GPU_AUDIO).driver == "snd_hda_intel"


def test_a_genuine_message_re_pointed_at_another_hosts_queue_and_row_is_refused(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    start_worker(root, "gpuhost")
    pve2 = Host.objects.create(name="pve2")  # no worker: its job waits in its queue
    job = submit(host=pve2, action="bind_vfio", targets=[GPU], parameters=BIND, user=operator_named("otto"))
    stored = StoredMessage.parse(job.signed_message)
    assert stored is not None and stored.queue == "host.pve2"

    # The row and the message both moved to gpuhost, whose worker would run a bind of that address.
    Job.objects.filter(pk=job.pk).update(host=Host.objects.get(name="gpuhost"))
    publish(dataclasses.replace(stored, queue="host.gpuhost"))
    _wait_refused(1)
    refusal = AuditEvent.objects.get(action="broker_message")
    assert refusal.host == "gpuhost"
    assert f"Refused a bind_vfio message for job {job.pk}: it is for host pve2, and this worker runs on gpuhost." == (
        refusal.error
    )
    job.refresh_from_db()
    assert job.state == State.QUEUED and job.steps == []
    assert scan(root).device(GPU).driver == "nouveau" and scan(root).device(GPU_AUDIO).driver == "snd_hda_intel"
