"""Benchmark: end-to-end bind jobs through Redis and a real worker, minus the sysfs work.

For each of N jobs (default 200): the web side's submit() saves the Job row, takes the group
lock, audits the request and sends the task to Redis; the worker takes it, checks it,
runs bind_vfio on a GPU+audio group (kernel double on a tree), writes each step to the row,
stores a fresh snapshot, audits the outcome. The job's own timestamps give the total
(created -> finished); its steps' timestamps give the time spent reading and writing the
host (validate's scan, unbind, bind, verify, the final snapshot...). The difference is what
the job machinery costs: queueing, Redis, the worker's pickup, database writes, audit.
Between measured jobs an unmeasured restore_driver job puts the group back.

Prints p50/p95 of that overhead (target p50 <= 25 ms) and of the totals.

Usage: .venv/bin/python bench/jobs.py [--jobs N]
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


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument(
        "--redis", default=None, help="a Redis with a password to use (default: start a private redis-server)"
    )
    args = parser.parse_args()
    private = None
    if args.redis is None:
        from tests.worker_support import PrivateRedis

        private = PrivateRedis().start()
        args.redis = private.url(0)

    workdir = Path(tempfile.mkdtemp(prefix="pw-bench-jobs-"))
    env = {
        "DJANGO_SETTINGS_MODULE": "webui.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "REDIS_URL": args.redis,
        "PASSTHROUGH_ROOT": str(workdir / "host"),
        "PASSTHROUGH_KERNEL": "double",
        "PASSTHROUGH_HOSTNAME": "benchhost",
        "PASSTHROUGH_WATCH_UDEV": "false",
        "SECRET_KEY": "bench-only",
    }
    os.environ.update(env)

    import django

    django.setup()
    import redis
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from passthrough.hosttrees.spec import FunctionSpec, HostSpec
    from passthrough.hosttrees.tree import write_tree
    from webui.accounts.roles import OPERATOR, set_role
    from webui.hosts.models import Host
    from webui.jobs.models import Job
    from webui.jobs.service import submit

    if private is not None:
        redis.Redis.from_url(args.redis).flushdb()  # our own server: nobody else's data
    call_command("migrate", verbosity=0)
    bencher = get_user_model().objects.create_user(username="bench")
    set_role(bencher, OPERATOR)
    write_tree(
        HostSpec(
            functions=[
                FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=2),
                FunctionSpec("0000:01:00.0", "10de", "1d01", "030000", "a1", driver="nouveau", iommu_group=2,
                             parent="0000:00:01.0", boot_vga=False, reset_methods=["flr", "bus"]),
                FunctionSpec("0000:01:00.1", "10de", "0fb8", "040300", "a1", driver="snd_hda_intel", iommu_group=2,
                             parent="0000:00:01.0"),
            ],
            modules=("kvm_intel", "kvm", "vfio", "vfio_pci", "vfio_iommu_type1"),
        ),
        workdir / "host",
    )  # fmt: skip
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - the worker writes it until the end
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "webui", "worker", "-Q", "host.benchhost", "-c", "1",
         "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "WARNING"],
        cwd=REPO, env={**os.environ, **env, "PYTHONPATH": str(REPO)}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while not Host.objects.filter(name="benchhost", snapshots__source="startup").exists():
            if time.time() > deadline or worker.poll() is not None:
                raise SystemExit(f"worker did not start: {(workdir / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.1)
        host = Host.objects.get(name="benchhost")

        def run(action: str) -> Job:
            job = submit(
                host=host,
                action=action,
                targets=["0000:01:00.0"],
                parameters={"release_console": False} if action == "bind_vfio" else {},
                user=bencher,
            )
            while True:
                job.refresh_from_db()
                if job.is_finished:
                    return job
                time.sleep(0.002)

        overheads, totals, sysfs = [], [], []
        for index in range(args.jobs + 3):
            job = run("bind_vfio")
            assert job.state == "succeeded", job.message
            total = (job.finished - job.created).total_seconds() * 1000
            in_steps = sum((step["finished"] - step["started"]) * 1000 for step in job.steps if step.get("finished"))
            if index >= 3:  # the first jobs warm caches and connections
                totals.append(total)
                sysfs.append(in_steps)
                overheads.append(total - in_steps)
            back = run("restore_driver")
            assert back.state == "succeeded", back.message
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if private is not None:
            private.close()

    print(f"{len(totals)} bind jobs (GPU + audio group) through Redis and a real worker, kernel double on a tree")
    print(f"total per job      p50 {statistics.median(totals):7.1f} ms   p95 {_percentile(totals, 0.95):7.1f} ms")
    print(f"sysfs work (steps) p50 {statistics.median(sysfs):7.1f} ms   p95 {_percentile(sysfs, 0.95):7.1f} ms")
    print(
        f"job overhead       p50 {statistics.median(overheads):7.1f} ms   p95 {_percentile(overheads, 0.95):7.1f} ms   (target p50 <= 25 ms)"
    )


if __name__ == "__main__":
    main()
