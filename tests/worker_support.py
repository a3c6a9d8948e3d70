"""A real Celery worker process for tests: a real, password-protected Redis, a host tree behind the kernel double.

The tests start their own ``redis-server`` (a free port on 127.0.0.1, a password, no
persistence, its files in a temporary directory) once per run and stop it at the end, so
they never touch another application's Redis and always meet an authenticated broker, as
the app requires. The worker runs ``celery -A webui worker`` with the same settings
module, pointed at the test database (a file, so both processes see it), at that Redis, at
``PASSTHROUGH_ROOT`` = the test's tree with ``PASSTHROUGH_KERNEL=double``, and consumes
only ``host.<name>``. It is ready when its start-up snapshot is in the database.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")


class PrivateRedis:
    """A redis-server of this test run's own, with a password; stopped when the run ends."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="pw-test-redis-"))
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> PrivateRedis:
        assert REDIS_SERVER, "redis-server is not installed"
        for _ in range(5):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            config = self.directory / "redis.conf"
            config.write_text(
                f'bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\nsave ""\nappendonly no\n'
                f"dir {self.directory}\nlogfile {self.directory / 'redis.log'}\n"
            )
            config.chmod(0o600)
            self.process = subprocess.Popen([REDIS_SERVER, str(config)], start_new_session=True)
            if self._wait():
                return self
            self.stop()
        raise RuntimeError(f"the test redis-server did not start: {(self.directory / 'redis.log').read_text()[-2000:]}")

    def _wait(self) -> bool:
        import redis

        deadline = time.time() + 10
        while time.time() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                if redis.Redis.from_url(self.url(0), socket_connect_timeout=0.5).ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
        return False

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


_private: PrivateRedis | None = None


def private_redis() -> PrivateRedis:
    """This run's Redis, started on first use."""
    global _private
    if _private is None:
        _private = PrivateRedis().start()
        atexit.register(_private.close)
    return _private


def redis_url() -> str:
    return private_redis().url(0)


def redis_available() -> bool:
    return REDIS_SERVER is not None


requires_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="needs redis-server (apt-get install redis-server; scripts/test installs it)"
)


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
    """Empty this run's own Redis (never another application's: the tests start their own)."""
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
    """start_worker(root, hostname="testhost", start_timeout=60) -> LiveWorker; every worker stops at the end."""
    previous = point_broker(redis_url())
    flush_test_redis()
    workers: list[LiveWorker] = []

    def start(root: Path, hostname: str = "testhost", start_timeout: float = 60, **extra_env: str) -> LiveWorker:
        worker = LiveWorker(root, hostname, tmp_path / f"worker-{hostname}.log", extra_env)
        workers.append(worker)
        return worker.start(timeout=start_timeout)

    yield start
    for worker in workers:
        worker.stop()
    point_broker(previous)


def operator_named(username: str):  # type: ignore[no-untyped-def]
    """An operator account (get or create): the worker runs a job only for a user who may still run it."""
    from django.contrib.auth import get_user_model

    from webui.accounts.roles import OPERATOR, set_role

    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        set_role(user, OPERATOR)
    return user
