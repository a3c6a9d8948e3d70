"""The heartbeat's LostMessages: a queued job whose message the broker no longer holds is sent again.

Against the test's own Redis (no worker reads it here): a job whose message waits in its
host's queue is never sent again; one whose message is gone is sent again at the second
heartbeat that misses it, not the first (a message may be between the web app's row and
its send, or between the worker's pop and its record of the delivery). What is sent again
is the message the web app stored with the job when it saved it, byte for byte, signed
with the web app's key; a queued row without one is never sent, and expires saying why.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import shutil
from pathlib import Path

import pytest
import redis
from celery.security.certificate import FSCertStore
from celery.security.serialization import SecureSerializer
from django.conf import settings
from django.utils import timezone

from tests.worker_support import operator_named, redis_url
from webui.hosts.models import Host
from webui.jobs.broker import SigningFiles
from webui.jobs.models import Job, State
from webui.jobs.reconcile import LostMessages, broker_task_ids, resend_queued
from webui.jobs.service import create_job, expire_stale, submit
from webui.jobs.signed import StoredMessage


def _queued(queue: str) -> list[dict]:
    return [json.loads(raw) for raw in redis.Redis.from_url(redis_url()).lrange(queue, 0, -1)]


def _queued_ids(queue: str) -> list[str]:
    return [envelope["headers"]["id"] for envelope in _queued(queue)]


def _verified_with_the_web_certificate_alone(body: str, tmp_path: Path) -> dict:
    """The keyword arguments of a stored body, verified against a store holding the web app's certificate only."""
    store = tmp_path / "web-only"
    store.mkdir()
    shutil.copyfile(SigningFiles(Path(settings.BROKER_SIGNING_DIR)).certificate, store / "web.crt")
    args, kwargs, _ = SecureSerializer(cert_store=FSCertStore(str(store)), digest="sha256").deserialize(body)
    assert args == []
    return kwargs


@pytest.mark.django_db
def test_a_job_whose_message_is_gone_is_sent_again_at_the_second_beat_that_misses_it(test_broker, settings):
    settings.CELERY_BROKER_URL = redis_url()
    host = Host.objects.create(name="pve2")
    user = operator_named("otto")
    sent = submit(host=host, action="scan", targets=[], user=user)
    lost = create_job(host=host, action="scan", targets=[], user=user, actor="otto")  # saved, never sent
    assert broker_task_ids(host.queue) == {sent.task_id}

    beats = LostMessages()
    assert beats.resend(host) == 0, "one miss proves nothing"
    assert beats.resend(host) == 1
    assert sorted(_queued_ids(host.queue)) == sorted([sent.task_id, lost.task_id])
    assert beats.resend(host) == 0 and beats.resend(host) == 0, "a message in the queue is never sent twice"


@pytest.mark.django_db
def test_a_delivered_unacknowledged_message_counts_as_held(test_broker, settings):
    settings.CELERY_BROKER_URL = redis_url()
    host = Host.objects.create(name="pve2")
    job = submit(host=host, action="scan", targets=[], user=operator_named("otto"))
    client = redis.Redis.from_url(redis_url())
    raw = client.rpop(host.queue)  # what a worker's pop does; kombu records the delivery in "unacked"
    client.hset("unacked", "tag-1", json.dumps([json.loads(raw), "", host.queue]))
    beats = LostMessages()
    assert broker_task_ids(host.queue) == {job.task_id}
    assert beats.resend(host) == 0 and beats.resend(host) == 0
    assert client.llen(host.queue) == 0


@pytest.mark.django_db
def test_an_unreadable_broker_sends_nothing_again(test_broker, settings):
    host = Host.objects.create(name="pve2")
    create_job(host=host, action="scan", targets=[], user=operator_named("otto"), actor="otto")
    settings.CELERY_BROKER_URL = "redis://:password@127.0.0.1:1/0"  # nothing listens on port 1
    beats = LostMessages()
    assert broker_task_ids(host.queue) is None
    assert beats.resend(host) == 0 and beats.resend(host) == 0


@pytest.mark.django_db
def test_what_is_sent_again_is_the_stored_message_byte_for_byte(test_broker, settings, tmp_path):
    settings.CELERY_BROKER_URL = redis_url()
    host = Host.objects.create(name="pve2")
    job = create_job(host=host, action="scan", targets=[], user=operator_named("otto"), actor="otto")
    stored = StoredMessage.parse(job.signed_message)
    assert stored is not None and stored.queue == "host.pve2" and stored.headers["task"] == "passthrough.scan"
    kwargs = _verified_with_the_web_certificate_alone(stored.body, tmp_path)
    assert kwargs == {"job_id": job.pk, "host": "pve2", "issued_at": job.created.timestamp()}

    beats = LostMessages()
    assert beats.resend(host) == 0 and beats.resend(host) == 1
    assert resend_queued(host) == 1
    first, second = _queued(host.queue)
    for envelope in (first, second):
        assert base64.b64decode(envelope["body"]).decode() == stored.body
        assert (envelope["content-type"], envelope["headers"]) == ("application/data", stored.headers)
    job.refresh_from_db()
    assert job.signed_message == stored.to_text(), "the stored message is the same after sending it again"


@pytest.mark.django_db
def test_a_queued_row_without_a_stored_message_is_never_sent_and_expires_saying_why(test_broker, settings):
    settings.CELERY_BROKER_URL = redis_url()
    host = Host.objects.create(name="pve2")
    user = operator_named("otto")
    # Written into the database by hand (or by an older version): a queued row, no message.
    forged = Job.objects.create(host=host, user=user, actor="otto", action="bind_vfio", targets=["0000:01:00.0"])
    # A genuine message a database writer pointed at another host's queue is not sent from here either.
    genuine = create_job(host=host, action="scan", targets=[], user=user, actor="otto")
    elsewhere = dataclasses.replace(StoredMessage.parse(genuine.signed_message), queue="host.pve3")
    Job.objects.filter(pk=genuine.pk).update(signed_message=elsewhere.to_text())

    beats = LostMessages()
    assert [beats.resend(host), beats.resend(host), beats.resend(host), resend_queued(host)] == [0, 0, 0, 0]
    assert _queued_ids(host.queue) == [] and _queued_ids("host.pve3") == []

    Job.objects.filter(pk=forged.pk).update(created=timezone.now() - datetime.timedelta(minutes=11))
    assert expire_stale(host, 600) == 1
    forged.refresh_from_db()
    assert forged.state == State.EXPIRED
    assert forged.message == (
        "Not run: the job has no message signed by the web app (it was made by an older version, or written "
        "into the database by hand), so no worker sends it. Nothing was changed. Submit it again from the web "
        "app if it is still wanted."
    )
