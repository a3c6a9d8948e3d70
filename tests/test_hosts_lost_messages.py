"""The heartbeat's LostMessages: a queued job whose message the broker no longer holds is sent again.

Against the test's own Redis (no worker reads it here): a job whose message waits in its
host's queue is never sent again; one whose message is gone is sent again at the second
heartbeat that misses it, not the first (a message may be between the web app's row and
its send, or between the worker's pop and its record of the delivery).
"""

from __future__ import annotations

import json

import pytest
import redis

from tests.worker_support import operator_named, redis_url
from webui.hosts.models import Host
from webui.jobs.reconcile import LostMessages, broker_task_ids
from webui.jobs.service import create_job, submit


def _queued_ids(queue: str) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in redis.Redis.from_url(redis_url()).lrange(queue, 0, -1)]


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
