"""The broker is not a trusted channel: what someone who reaches it can and cannot make the root worker do.

A separate process plays the attacker (as ``nobody`` when the tests run as root, so it
cannot read var/ and its signing key). Against a real password-protected Redis and a real
worker, it sends Celery's remote-control broadcasts (shutdown, revoke with terminate, pool
changes), unsigned task messages, messages signed by a key of its own, a tampered copy of
a genuine signed message, and a replay of one that already ran. None of them has any
effect: the worker keeps running, no job runs but the ones operators asked for, and the
refusals are counted in the audit log.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from passthrough.hosttrees.tree import write_tree
from passthrough.pci.scan import scan
from tests.test_jobs_worker import gpu_host
from tests.worker_support import REPO, operator_named, redis_url, requires_redis, wait_for_job
from webui.audit.models import AuditEvent, RefusalBurst
from webui.jobs.broker import BrokerRefused, authentication_problem, check_broker_url
from webui.jobs.models import Job, State
from webui.jobs.service import create_job, send

pytestmark = [requires_redis, pytest.mark.worker]
QUEUE = "host.gpuhost"
BIND = {"address": "0000:01:00.0", "confirm": None, "release_console": False}


def forge(url: str, action: str, argument: str = "", queue: str = QUEUE, stdin: bytes = b"") -> dict:
    """Run tests/forger.py as another user (nobody) when we are root, else as ourselves."""
    command = [sys.executable, str(REPO / "tests" / "forger.py"), url, queue, action, argument]
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(command, cwd="/", env=env, input=stdin, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _refused() -> int:
    return sum(RefusalBurst.objects.values_list("count", flat=True))


def _wait_refused(count: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while _refused() < count and time.time() < deadline:
        time.sleep(0.1)
    assert _refused() == count, f"{_refused()} refusals counted, expected {count}"


def _captured_message(job: Job) -> bytes:
    """The genuine signed message the web app stored for ``job``, published to a queue no worker reads and taken off it."""
    import dataclasses

    import redis

    from webui.jobs.signed import StoredMessage, publish

    side = "capture.side"
    publish(dataclasses.replace(StoredMessage.parse(job.signed_message), queue=side))
    raw = redis.Redis.from_url(redis_url()).rpop(side)
    assert raw is not None
    return raw


def _tampered(raw: bytes) -> bytes:
    """The same envelope with the signed body changed (the other function of the card) and the signature kept."""
    envelope = json.loads(raw)
    packed = base64.b64decode(envelope["body"])
    fields = base64.b64decode(packed).split(b"\x00\x01", 4)
    assert b"0000:01:00.0" in fields[4]
    fields[4] = fields[4].replace(b"0000:01:00.0", b"0000:01:00.1")
    envelope["body"] = base64.b64encode(base64.b64encode(b"\x00\x01".join(fields))).decode()
    return json.dumps(envelope).encode()


def test_an_unauthenticated_broker_url_is_refused_unless_explicitly_allowed():
    assert authentication_problem("redis://:secret@127.0.0.1:6390/0") is None
    assert authentication_problem("redis://user:secret@broker.lan:6379/0") is None
    assert authentication_problem("unix:///run/redis/redis.sock") is None
    with pytest.raises(BrokerRefused, match="carries no password.*PASSTHROUGH_ALLOW_UNAUTHENTICATED_BROKER"):
        check_broker_url("redis://127.0.0.1:6379/0", allow_unauthenticated=False)
    check_broker_url("redis://127.0.0.1:6379/0", allow_unauthenticated=True)


def test_the_web_app_sends_nothing_to_an_open_broker_and_saves_no_job(transactional_db):
    from tests.worker_support import point_broker
    from webui.hosts.models import Host
    from webui.jobs.service import BrokerUnavailable, submit

    host = Host.objects.create(name="open")
    saved = point_broker("redis://127.0.0.1:6379/0")
    try:
        with pytest.raises(BrokerUnavailable, match="carries no password"):
            submit(host=host, action="scan", targets=[], user=operator_named("olga"))
    finally:
        point_broker(saved)
    assert not Job.objects.exists() and not AuditEvent.objects.filter(action="scan").exists()


def test_the_celery_app_signs_its_messages_and_takes_no_remote_control():
    from webui.celery import SIGNING_READY, app

    conf = app.conf
    assert SIGNING_READY
    assert (conf.task_serializer, list(conf.accept_content)) == ("auth", ["auth"])
    assert conf.worker_enable_remote_control is False
    assert conf.worker_consumer == "webui.jobs.consumer:GuardedConsumer"


def test_a_local_user_without_the_password_cannot_reach_the_broker():
    parts = urlsplit(redis_url())
    no_password = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))
    answer = forge(no_password, "ping")
    assert answer["connected"] is False and "auth" in answer["error"].lower()


def test_forged_control_and_task_messages_have_no_effect(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    worker = start_worker(root, "gpuhost")
    host = Job._meta.get_field("host").related_model.objects.get(name="gpuhost")
    url = redis_url()
    job = create_job(
        host=host,
        action="bind_vfio",
        targets=["0000:01:00.0"],
        parameters=BIND,
        user=operator_named("ada"),
        actor="ada",
    )
    kwargs = json.dumps({"job_id": job.pk, **BIND})

    # Remote control: stop the worker, kill the job's task in advance, shrink the pool.
    forge(url, "shutdown")
    forge(url, "revoke", job.task_id)
    forge(url, "pool_shrink")
    # Task messages for the queued job, none signed by the web app's key.
    forge(url, "unsigned", kwargs)
    forge(url, "foreign-key", kwargs)
    genuine = _captured_message(job)
    forge(url, "raw", stdin=_tampered(genuine))

    _wait_refused(3)
    time.sleep(1.0)  # time for any effect to show
    assert worker.process.poll() is None, "the worker ignores shutdown"
    job.refresh_from_db()
    assert job.state == State.QUEUED, "no forged message started the job"
    assert scan(root).device("0000:01:00.0").driver == "nouveau"
    assert scan(root).device("0000:01:00.1").driver == "snd_hda_intel"

    # The genuine message, sent after its id was "revoked", runs the job.
    send(job)
    job = wait_for_job(job)
    assert job.state == State.SUCCEEDED, job.message
    assert scan(root).device("0000:01:00.0").driver == "vfio-pci"

    # A replay of that genuine message runs nothing again.
    forge(url, "raw", stdin=genuine)
    _wait_refused(4)
    outcomes = AuditEvent.objects.filter(job_id=job.pk).exclude(result__in=["refused", "requested"])
    assert list(outcomes.values_list("result", flat=True)) == ["succeeded"], "one outcome, from the genuine message"
    burst = AuditEvent.objects.filter(action="broker_message")
    assert burst.count() == 1 and "not signed by a trusted key" in burst.get().error
    assert "duplicate or replayed" in worker.log.read_text()
