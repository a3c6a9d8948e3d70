"""Whatever lands on the broker, the worker writes nothing it should not and keeps running.

The broker is not trusted to be private: these messages are put straight onto the host's
queue, bypassing the web app and its signing key: unknown task names, pickle and unknown
content types, garbage bodies, extra and missing arguments, wrong types, and well-formed
messages for jobs that do not exist. Afterwards the tree is byte-for-byte what it was, the
worker is alive, every message was counted as refused, and the audit log holds one event
for the burst rather than one per message.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kombu import Connection, Exchange, Producer

from passthrough.hosttrees.tree import write_tree
from tests.test_jobs_worker import gpu_host
from tests.worker_support import redis_url, requires_redis
from webui.audit.models import AuditEvent, RefusalBurst
from webui.jobs.tasks import TASKS

pytestmark = [requires_redis, pytest.mark.worker]
QUEUE = "host.badhost"
KNOWN = [task.name for task in TASKS.values()]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=8,
)
addresses = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\A[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9]\Z"),
    st.sampled_from(["0000:01:00.0", "../../../etc/passwd", "0000:01:00.0\n", "0000:01:00.0; reboot", ""]),
)
kwargs_strategy = st.fixed_dictionaries(
    {"job_id": st.one_of(st.integers(min_value=-5, max_value=2**60), st.text(max_size=5), st.none(), st.booleans())},
    optional={
        "address": addresses,
        "count": st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.text(max_size=4)),
        "method": st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["flr", "bus", "../reset"])),
        "confirm": st.one_of(st.none(), st.text(max_size=300)),
        "release_console": json_values,
        "previous_drivers": st.dictionaries(addresses, st.one_of(st.none(), st.text(max_size=20)), max_size=3),
        "addresses": st.lists(addresses, max_size=70),
        "add": st.lists(st.text(max_size=30), max_size=3),
        "remove": json_values,
        "undo_of": json_values,
        "extra": json_values,
    },
)


def tree_fingerprint(root) -> str:  # type: ignore[no-untyped-def]
    digest = hashlib.sha256()
    for directory, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        if ".kerneldouble" in directory:
            continue
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]):
            path = os.path.join(directory, name)
            digest.update(path.encode())
            if os.path.islink(path):
                digest.update(b"->" + os.readlink(path).encode())
            else:
                with open(path, "rb") as handle:
                    digest.update(handle.read())
    return digest.hexdigest()


def _queue_empty() -> bool:
    import redis

    return redis.Redis.from_url(redis_url()).llen(QUEUE) == 0


def _refused_count() -> int:
    return sum(RefusalBurst.objects.values_list("count", flat=True))


VALID_BIND = {"job_id": 1, "address": "0000:01:00.0", "confirm": None, "release_console": False}


def test_forged_and_malformed_messages_change_nothing(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    worker = start_worker(root, "badhost")
    before = tree_fingerprint(root)
    sent: dict[str, int] = {}

    connection = Connection(redis_url())
    producer = Producer(connection.channel(), exchange=Exchange(QUEUE, type="direct"), routing_key=QUEUE)

    # Each kind of message is stated, so no run depends on what hypothesis happens to draw.
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(name=st.one_of(st.sampled_from(KNOWN), st.text(max_size=30)), kwargs=kwargs_strategy,
           serializer=st.sampled_from(["json", "json", "pickle", "yaml-ish", "garbage"]), positional=st.booleans())  # fmt: skip
    @example(name="passthrough.bind_vfio", kwargs=VALID_BIND, serializer="json", positional=False)
    @example(name="passthrough.bind_vfio", kwargs=VALID_BIND, serializer="pickle", positional=False)
    @example(name="passthrough.reset", kwargs={"job_id": 1, "extra": 1}, serializer="yaml-ish", positional=True)
    @example(name="passthrough.scan", kwargs={"job_id": 2}, serializer="garbage", positional=False)
    @example(name="celery.chord_unlock", kwargs={"job_id": 1}, serializer="json", positional=False)
    @example(name="no.such.task", kwargs={"job_id": 1}, serializer="json", positional=False)
    def publish(name, kwargs, serializer, positional):  # type: ignore[no-untyped-def]
        sent[serializer] = sent.get(serializer, 0) + 1
        headers = {"lang": "py", "task": name, "id": f"fuzz-{time.time_ns()}", "argsrepr": "", "kwargsrepr": ""}
        args = [1, 2] if positional else []
        if serializer in ("json", "pickle"):
            producer.publish([args, kwargs, {}], serializer=serializer, headers=headers)
        else:
            producer.publish(
                b"\x80\x04not json",
                content_type=f"application/x-{serializer}",
                content_encoding="binary",
                headers=headers,
            )

    publish()
    total = sum(sent.values())
    deadline = time.time() + 90
    while time.time() < deadline and not (_queue_empty() and _refused_count() >= total):
        time.sleep(0.2)
    assert worker.process.poll() is None, "the worker must survive every message"
    assert tree_fingerprint(root) == before
    assert _refused_count() == total, "every message is refused and counted, none run"
    events = list(AuditEvent.objects.values_list("result", "action"))
    assert events == [("refused", "broker_message")], "a burst is one audit event, not one per message"
    connection.release()
