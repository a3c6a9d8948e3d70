"""SIGKILL the worker between unbind and bind, again and again: nothing is left half-done.

Each round: a bind job starts on a GPU+audio group; the kernel double hangs the
drivers_probe that would bind the first function to vfio-pci, so the function has been
unbound and sits on no driver; the test kills the whole worker (parent and pool child) with
SIGKILL, starts a new one, and checks that the reconciler closed the job, every function is
on its original driver or on vfio-pci, the group lock is gone, and the audit says so.
The round count is CRASH_ROUNDS (default 50).
"""

from __future__ import annotations

import os
import time

import pytest

from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.kerneldouble.faults import hang
from passthrough.pci.scan import scan
from tests.test_jobs_worker import gpu_host
from tests.worker_support import operator_named, requires_redis, wait_for_job
from webui.audit.models import AuditEvent, verify_chain
from webui.hosts.models import Host
from webui.jobs.models import GroupLock, Job, State
from webui.jobs.service import submit

pytestmark = [requires_redis, pytest.mark.worker, pytest.mark.slow]
ROUNDS = int(os.environ.get("CRASH_ROUNDS", "50"))
ORIGINAL = {"0000:01:00.0": "nouveau", "0000:01:00.1": "snd_hda_intel"}


def _wait_for_step(job: Job, name: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job.refresh_from_db()
        if any(step["name"] == name and step.get("ok") is None for step in job.steps):
            return
        if job.is_finished:
            raise AssertionError(f"job {job.pk} finished before '{name}': {job.message}")
        time.sleep(0.02)
    raise AssertionError(f"job {job.pk} never reached '{name}': {job.steps}")


def test_killing_the_worker_mid_bind_never_strands_a_device(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    double = KernelDouble(root)
    worker = start_worker(root, "crashhost")
    host = Host.objects.get(name="crashhost")
    closed = 0
    for round_number in range(1, ROUNDS + 1):
        double.inject(hang("sys/bus/pci/drivers_probe", 60, times=1))
        job = submit(
            host=host,
            action="bind_vfio",
            targets=["0000:01:00.0"],
            parameters={"release_console": False},
            user=operator_named("crash"),
        )
        _wait_for_step(job, "bind")
        assert scan(root).device("0000:01:00.0").driver is None, "the kill must land after the unbind"
        worker.kill()
        double.clear_faults()
        worker.start()  # its start-up reconciles before it reports ready

        job = wait_for_job(job, timeout=10)
        assert job.state == State.ROLLED_BACK, f"round {round_number}: {job.state}: {job.message}"
        drivers = {address: scan(root).device(address).driver for address in ORIGINAL}
        assert all(drivers[address] in (ORIGINAL[address], "vfio-pci") for address in ORIGINAL), (round_number, drivers)
        assert drivers == ORIGINAL, f"round {round_number}: the reconciler puts the group back: {drivers}"
        assert not Job.objects.filter(state=State.RUNNING).exists()
        assert not GroupLock.objects.exists()
        reconciled = AuditEvent.objects.filter(job_id=job.pk, result="rolled_back").get()
        assert reconciled.parameters.get("reconciled") is True and "worker stopped during 'bind'" in reconciled.error
        closed += 1

    # After all that, a job runs normally and the audit chain is intact.
    final = wait_for_job(
        submit(
            host=host,
            action="bind_vfio",
            targets=["0000:01:00.0"],
            parameters={"release_console": False},
            user=operator_named("crash"),
        )
    )
    assert final.state == State.SUCCEEDED
    assert verify_chain().ok
    print(f"\ncrash loop: {closed} of {ROUNDS} rounds killed mid-bind and reconciled; then a clean bind succeeded")
