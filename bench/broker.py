"""Benchmark: a flood of forged broker messages, and the audit page over a long log.

1. Starts a private password-protected redis-server and a real worker (kernel double on a
   GPU tree), then publishes N forged messages (default 20,000) straight onto the worker's
   queue, as someone who has the broker's password but not the signing key would: unsigned
   JSON task messages for passthrough.scan, for jobs that do not exist. Prints how long the
   worker took to drop them all, how many it counted as refused, how many audit rows they
   wrote, and whether any job ran.
2. Writes E audit events (default 100,000) into a fresh database and times the audit
   page's verification (verify_recent: from the last sealed checkpoint) on a first visit
   (everything) and on a later visit (the events since), against the full walk that
   `manage.py audit_verify` does.

Usage: .venv/bin/python bench/broker.py [--messages N] [--events E]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()

    from tests.worker_support import PrivateRedis

    redis_server = PrivateRedis().start()
    workdir = Path(tempfile.mkdtemp(prefix="pw-bench-broker-"))
    env = {
        "DJANGO_SETTINGS_MODULE": "webui.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "REDIS_URL": redis_server.url(0),
        "PASSTHROUGH_ROOT": str(workdir / "host"),
        "PASSTHROUGH_KERNEL": "double",
        "PASSTHROUGH_HOSTNAME": "floodhost",
        "PASSTHROUGH_WATCH_UDEV": "false",
    }
    os.environ.update(env)
    import django

    django.setup()
    import redis
    from django.core.management import call_command
    from kombu import Connection, Exchange, Producer

    from passthrough.hosttrees.tree import write_tree
    from tests.test_jobs_worker import gpu_host
    from webui.audit.models import AuditEvent, RefusalBurst
    from webui.hosts.models import Host
    from webui.jobs.models import Job

    call_command("migrate", verbosity=0)
    write_tree(gpu_host(), workdir / "host")
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - the worker writes it until the end
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "webui", "worker", "-Q", "host.floodhost", "-c", "1", "-l", "ERROR"],
        cwd=REPO, env={**os.environ, **env, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while not Host.objects.filter(name="floodhost", snapshots__source="startup").exists():
            if time.time() > deadline or worker.poll() is not None:
                raise SystemExit(f"worker did not start: {(workdir / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.1)
        rows_before = AuditEvent.objects.count()
        connection = Connection(redis_server.url(0))
        producer = Producer(connection.channel(), exchange=Exchange("host.floodhost", type="direct"))
        started = time.perf_counter()
        for n in range(args.messages):
            producer.publish(
                [[], {"job_id": 10_000 + n}, {}],
                serializer="json",
                routing_key="host.floodhost",
                headers={"lang": "py", "task": "passthrough.scan", "id": f"forged-{n}"},
            )
        published = time.perf_counter() - started
        client = redis.Redis.from_url(redis_server.url(0))
        deadline = time.time() + 900
        while time.time() < deadline:
            counted = sum(RefusalBurst.objects.values_list("count", flat=True))
            if counted >= args.messages and client.llen("host.floodhost") == 0:
                break
            time.sleep(0.5)
        dropped = time.perf_counter() - started
        counted = sum(RefusalBurst.objects.values_list("count", flat=True))
        rows = AuditEvent.objects.count() - rows_before
        alive = worker.poll() is None
        ran = Job.objects.count()
        connection.release()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
        redis_server.close()

    print(f"{args.messages} forged task messages published in {published:.1f} s, all dropped after {dropped:.1f} s")
    print(f"counted as refused: {counted}; audit rows written: {rows}; jobs run: {ran}; worker alive: {alive}")

    _audit_page(args.events, workdir)
    shutil.rmtree(workdir, ignore_errors=True)


def _audit_page(count: int, workdir: Path) -> None:
    from django.db import connection, transaction

    from webui.audit import chain
    from webui.audit.models import (
        AuditCheckpoint,
        AuditEvent,
        AuditHead,
        audit_key,
        record,
        verify_chain,
        verify_recent,
    )

    AuditCheckpoint.objects.all().delete()
    with connection.cursor() as cursor:  # around the append-only model, to start from an empty log
        cursor.execute("DELETE FROM audit_auditevent")
    AuditHead.objects.all().delete()
    started = time.perf_counter()
    key = audit_key()
    with transaction.atomic():  # the same chain record() writes, in one transaction for speed
        record(actor="bench", source="worker", host="h", action="scan", result="succeeded")
        head = AuditHead.objects.get()
        previous, batch, last_id = head.last_hash, [], AuditEvent.objects.get().pk
        from django.utils import timezone

        for n in range(1, count):
            event = AuditEvent(
                id=last_id + n, created=timezone.now(), actor="bench", source="worker", host="h", action="scan",
                targets=[f"0000:{n % 256:02x}:00.0"], parameters={"n": n}, result="succeeded", prev_hash=previous,
            )  # fmt: skip
            event.hash = chain.event_hash(key, previous, event.hashed_fields())
            previous = event.hash
            batch.append(event)
            if len(batch) == 5000:
                AuditEvent.objects.bulk_create(batch)
                batch = []
        AuditEvent.objects.bulk_create(batch)
        head.count, head.last_hash = count, previous
        head.mac = chain.seal(key, "head", count, previous)
        head.save()
    print(f"wrote {count} chained audit events in {time.perf_counter() - started:.1f} s")

    def timed(function) -> tuple[float, object]:  # type: ignore[no-untyped-def]
        began = time.perf_counter()
        result = function()
        return (time.perf_counter() - began) * 1000, result

    full_ms, full = timed(verify_chain)
    first_ms, first = timed(verify_recent)
    later = [timed(verify_recent) for _ in range(5)]
    for n in range(20):
        record(actor="bench", source="worker", host="h", action="scan", result="succeeded", job_id=n)
    after_ms, after = timed(verify_recent)
    assert full.ok and first.ok and after.ok, (full.problems, first.problems, after.problems)
    print(f"audit_verify (every event):        {full_ms:8.1f} ms, {full.checked} events")
    print(f"audit page, first visit:           {first_ms:8.1f} ms, {first.checked} events (leaves a checkpoint)")
    print(f"audit page, next visits (median):  {statistics.median(ms for ms, _ in later):8.1f} ms, 0 new events")
    print(f"audit page after 20 new events:    {after_ms:8.1f} ms, {after.checked} events walked")

    from django.contrib.auth import get_user_model
    from django.test import Client

    viewer = get_user_model().objects.create_user(username="bench-viewer")
    client = Client(SERVER_NAME="localhost")
    client.force_login(viewer)
    pages = []
    for _ in range(10):
        began = time.perf_counter()
        response = client.get("/audit/", secure=True)
        pages.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200 and b"The chain is intact." in response.content, response.status_code
    print(f"audit page, whole request (median of 10): {statistics.median(pages):6.1f} ms at {count + 20} events")


if __name__ == "__main__":
    main()
