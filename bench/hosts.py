"""Benchmark: 20 hosts' workers on one install, on this machine.

Starts a private password-protected redis-server and N real Celery workers (default 20),
each with its own host tree (a GPU + audio group behind the kernel double), its own host
name (bench01, bench02, ...) and its own queue (host.<name>), all sharing one database:
PostgreSQL when one answers at --postgres (a database of this run's own, dropped at the
end), else SQLite. Then, in one run:

1. ``job overhead`` with only bench01's worker connected: M bind jobs on bench01 (each put
   back by an unmeasured restore_driver job). A job's overhead is its time from created to
   finished minus the time its steps spent reading and writing the host tree: queueing,
   Redis, the worker's pickup, the database, the audit (as bench/jobs.py measures it).
2. The other N-1 workers start; each registers its host and stores its first snapshot.
3. ``refresh N hosts``: one POST of "Refresh every host" (the view, through Django's test
   client, as an operator) until the newest of the N scan jobs' snapshots is stored.
   Each scan must have run in its own host's worker, on its own tree. Repeated --rounds
   times (the first, right after the workers started, is the slowest); the slowest click
   is the figure (target at most 3 s).
4. ``job overhead`` again on bench01, now with N workers connected; then the N-1 workers
   stop and it is measured once more alone. The ratio printed is the median with N workers
   over the mean of the two medians alone, so a machine that drifts (other processes sharing
   its cores) does not pass for the cost of the workers (target at most 1.2x).

Also printed: the workers' memory (resident set of every worker process, summed) and how
long they took to start. Workers run with --concurrency 1 and the pool given by --pool
(prefork: what scripts/run and the systemd unit run; solo: one process per worker).

Usage: .venv/bin/python bench/hosts.py [--hosts N] [--jobs M] [--rounds R] [--pool prefork|solo]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
POSTGRES = "postgres://postgres@127.0.0.1:5432"


def _database(args: argparse.Namespace, workdir: Path) -> tuple[str, str | None]:
    """The DATABASE_URL to use, and the PostgreSQL database to drop at the end (None for SQLite)."""
    if args.postgres:
        try:
            import psycopg

            name = f"pw_bench_hosts_{os.getpid()}"
            with psycopg.connect(f"{args.postgres}/postgres", connect_timeout=2, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {name}")
            return f"{args.postgres}/{name}", name
        except Exception as error:  # no PostgreSQL here: SQLite, said so in the output
            print(f"(PostgreSQL at {args.postgres} not usable: {error}; using SQLite)")
    return f"sqlite:///{workdir / 'db.sqlite3'}", None


def _drop(args: argparse.Namespace, name: str | None) -> None:
    if name is None:
        return
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"{args.postgres}/postgres", connect_timeout=2, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Worker:
    def __init__(self, name: str, root: Path, log: Path, env: dict[str, str], pool: str) -> None:
        self.name, self.root, self.log_path = name, root, log
        self.log = log.open("wb")
        command = [sys.executable, "-m", "celery", "-A", "webui", "worker", "-Q", f"host.{name}", "-c", "1",
                   "--pool", pool, "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "WARNING",
                   "-n", f"{name}@%h"]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**env, "PASSTHROUGH_ROOT": str(root), "PASSTHROUGH_HOSTNAME": name},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def _wait_ready(workers: list[Worker], timeout: float) -> float:
    from webui.hosts.models import Snapshot

    started = time.monotonic()
    names = {worker.name for worker in workers}
    while time.monotonic() - started < timeout:
        for worker in workers:
            if worker.process.poll() is not None:
                raise SystemExit(f"{worker.name}'s worker exited: {worker.log_path.read_text()[-2000:]}")
        ready = set(
            Snapshot.objects.filter(source="startup", host__name__in=names).values_list("host__name", flat=True)
        )
        if ready == names:
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"workers not ready after {timeout:.0f} s: {sorted(names - ready)}")


def _processes(worker: Worker) -> set[int]:
    """The worker's process and its pool children."""
    pid = worker.process.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return {pid, *(int(child) for child in children)}


def _resident_mib(workers: list[Worker]) -> float:
    """The resident memory of every worker process and its pool children, summed."""
    total = 0
    for pid in {pid for worker in workers for pid in _processes(worker)}:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _overheads(host, user, jobs: int) -> list[float]:  # type: ignore[no-untyped-def]
    from webui.jobs.service import submit

    def run(action: str):  # type: ignore[no-untyped-def]
        parameters = {"release_console": False} if action == "bind_vfio" else {}
        job = submit(host=host, action=action, targets=["0000:01:00.0"], parameters=parameters, user=user)
        while True:
            job.refresh_from_db()
            if job.is_finished:
                assert job.state == "succeeded", job.message
                return job
            time.sleep(0.002)

    overheads = []
    for index in range(jobs + 3):
        job = run("bind_vfio")
        total = (job.finished - job.created).total_seconds() * 1000
        in_steps = sum((step["finished"] - step["started"]) * 1000 for step in job.steps if step.get("finished"))
        if index >= 3:  # the first jobs warm caches and connections
            overheads.append(total - in_steps)
        run("restore_driver")
    return overheads


def _refresh(client, workers: list[Worker]) -> float:  # type: ignore[no-untyped-def]
    from django.urls import reverse
    from django.utils import timezone

    from webui.jobs.models import Job

    before = set(Job.objects.values_list("id", flat=True))
    clicked = timezone.now()
    response = client.post(reverse("refresh_hosts"))
    assert response.status_code == 302, response.content[:500]
    jobs = Job.objects.exclude(id__in=before).filter(action="scan")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = list(jobs.values_list("state", flat=True))
        if len(states) == len(workers) and all(state != "queued" and state != "running" for state in states):
            break
        time.sleep(0.01)
    else:
        raise SystemExit(f"the scans did not end within 2 minutes: {list(jobs.values_list('host__name', 'state'))}")
    assert all(state == "succeeded" for state in states), list(jobs.values_list("host__name", "state", "message"))
    # Each host's scan ran in that host's own worker (the job names its process), on its own tree.
    pids = {worker.name: _processes(worker) for worker in workers}
    for job in jobs.select_related("host", "snapshot"):
        assert int(job.owner.split()[2]) in pids[job.host.name], f"{job.host.name}'s scan ran in {job.owner}"
        assert job.snapshot.host_id == job.host_id and job.snapshot.inventory["root"].endswith(f"/{job.host.name}")
    newest = max(job.snapshot.created for job in jobs.select_related("snapshot"))
    return (newest - clicked).total_seconds()


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=60, help="measured bind jobs with 1 and with N workers")
    parser.add_argument("--rounds", type=int, default=3, help="refresh clicks")
    parser.add_argument("--pool", choices=("prefork", "solo"), default="prefork")
    parser.add_argument("--postgres", default=POSTGRES, help="a PostgreSQL server URL without database ('' for SQLite)")
    args = parser.parse_args()

    from tests.worker_support import PrivateRedis

    load_start = _load()
    private = PrivateRedis().start()
    workdir = Path(tempfile.mkdtemp(prefix="pw-bench-hosts-"))
    database, dropped = _database(args, workdir)
    env = {
        "DJANGO_SETTINGS_MODULE": "webui.settings",
        "DATABASE_URL": database,
        "REDIS_URL": private.url(0),
        "PASSTHROUGH_KERNEL": "double",
        "PASSTHROUGH_WATCH_UDEV": "false",
        "ALLOWED_HOSTS": "testserver",  # the refresh is posted through Django's test client
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from passthrough.hosttrees.tree import write_tree
    from tests.test_jobs_worker import gpu_host
    from webui.accounts.roles import OPERATOR, set_role
    from webui.hosts.models import Host

    workers: list[Worker] = []
    try:
        call_command("migrate", verbosity=0)
        user = get_user_model().objects.create_user(username="bench")
        set_role(user, OPERATOR)
        worker_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        names = [f"bench{number:02d}" for number in range(1, args.hosts + 1)]
        for name in names:
            write_tree(gpu_host(), workdir / name)

        workers.append(Worker(names[0], workdir / names[0], workdir / f"{names[0]}.log", worker_env, args.pool))
        _wait_ready(workers, 120)
        first = Host.objects.get(name=names[0])
        alone = _overheads(first, user, args.jobs)

        workers += [Worker(name, workdir / name, workdir / f"{name}.log", worker_env, args.pool) for name in names[1:]]
        start_time = _wait_ready(workers, 600)
        memory = _resident_mib(workers)
        client = Client()
        client.force_login(user)
        refreshes = [_refresh(client, workers) for _ in range(args.rounds)]
        crowded = _overheads(first, user, args.jobs)
        for worker in workers[1:]:
            worker.stop()
        alone_again = _overheads(first, user, args.jobs)
    finally:
        for worker in workers:
            worker.stop()
        _drop(args, dropped)
        private.close()
        shutil.rmtree(workdir, ignore_errors=True)

    before, many, after = statistics.median(alone), statistics.median(crowded), statistics.median(alone_again)
    one = (before + after) / 2
    engine = "PostgreSQL" if dropped else "SQLite"
    print(
        f"{args.hosts} workers (--pool {args.pool}, concurrency 1) on this machine ({os.cpu_count()} cores), {engine}"
    )
    print(f"  load average at the start {load_start}, at the end {_load()} (other processes share the cores)")
    print(f"  {args.hosts - 1} workers started in {start_time:.1f} s; all {args.hosts}: {memory:.0f} MiB resident")
    print(f"  refresh clicks: {', '.join(f'{seconds:.2f} s' for seconds in refreshes)}")
    print(
        f"  bind job overhead p50 ({args.jobs} jobs each): {before:.1f} ms with 1 worker, {many:.1f} ms with "
        f"{args.hosts}, {after:.1f} ms with 1 again"
    )
    print(f"refresh {args.hosts} hosts: {max(refreshes):.2f} s   (target <= 3 s; the slowest click)")
    print(f"job overhead at {args.hosts} hosts / 1 host: {many / one:.2f}x   (target <= 1.2x)")


if __name__ == "__main__":
    main()
