"""A real Celery worker process for tests: real Redis, a host tree behind the kernel double.

The worker runs ``celery -A webui worker`` with the same settings module, pointed at the
test database (a file, so both processes see it), at a Redis database of its own (flushed
first), at ``PASSTHROUGH_ROOT`` = the test's tree with ``PASSTHROUGH_KERNEL=double``, and
consumes only ``host.<name>``. It is ready when its start-up snapshot is in the database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
TEST_REDIS_DB = 13


def redis_url() -> str:
    base = os.environ.get("REDIS_URL", settings.REDIS_URL).rsplit("/", 1)[0]
    return f"{base}/{TEST_REDIS_DB}"


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(redis_url(), socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


requires_redis = pytest.mark.skipif(not redis_available(), reason="needs Redis at REDIS_URL (scripts/test starts one)")


def database_url() -> str:
    """The URL of the test database this process is using, for the worker."""
    config = connection.settings_dict
    if config["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{config['NAME']}"
    user = config.get("USER") or ""
    password = f":{config['PASSWORD']}" if config.get("PASSWORD") else ""
    at = f"{user}{password}@" if user else ""
    port = f":{config['PORT']}" if config.get("PORT") else ""
    return f"postgres://{at}{config.get('HOST') or 'localhost'}{port}/{config['NAME']}"


class LiveWorker:
    def __init__(self, root: Path, hostname: str, log: Path, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.hostname = hostname
        self.log = log
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="webui.settings",
            DATABASE_URL=database_url(),
            REDIS_URL=redis_url(),
            PASSTHROUGH_ROOT=str(self.root),
            PASSTHROUGH_KERNEL="double",
            PASSTHROUGH_HOSTNAME=self.hostname,
            PASSTHROUGH_WATCH_UDEV="false",
            PYTHONPATH=str(REPO),
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60) -> LiveWorker:
        from webui.hosts.models import Snapshot

        started_after = time.time()
        existing = set(Snapshot.objects.filter(host__name=self.hostname, source="startup").values_list("id", flat=True))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "webui", "worker", "-Q", f"host.{self.hostname}", "-c", "1",
             "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "INFO", "-n", f"{self.hostname}@%h"],
            cwd=REPO, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}: {self.log.read_text()[-3000:]}")
            fresh = Snapshot.objects.filter(host__name=self.hostname, source="startup").exclude(id__in=existing)
            if fresh.exists():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"worker not ready after {timeout:.0f} s ({time.time() - started_after:.0f} s): {self.log.read_text()[-3000:]}"
        )

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: what a crash or the OOM killer does."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def point_broker(url: str) -> str:
    """Send this process's tasks to ``url`` from now on; returns the previous URL."""
    from webui.celery import app

    previous = app.conf.broker_url
    if previous != url:
        app.conf.broker_url = url
        # Drop connections made with the old URL, as Celery itself does after a fork.
        app._pool = None
        if "amqp" in app.__dict__:
            app.amqp._producer_pool = None
    return previous


def flush_test_redis() -> None:
    import redis

    redis.Redis.from_url(redis_url()).flushdb()


def wait_for_job(job, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        job.refresh_from_db()
        if job.is_finished:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job.pk} still {job.state} after {timeout} s: steps {job.steps}")


@pytest.fixture
def start_worker(transactional_db, tmp_path):  # type: ignore[no-untyped-def]
    """start_worker(root, hostname="testhost") -> LiveWorker; every worker stops at the end."""
    previous = point_broker(redis_url())
    flush_test_redis()
    workers: list[LiveWorker] = []

    def start(root: Path, hostname: str = "testhost", **extra_env: str) -> LiveWorker:
        worker = LiveWorker(root, hostname, tmp_path / f"worker-{hostname}.log", extra_env)
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()
    point_broker(previous)
