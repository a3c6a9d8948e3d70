"""Redis restarted while a job runs and others wait: no job is lost, none runs twice.

The test starts a redis-server of its own (a free port, a password, no persistence: what the
default install's private Redis is) and a real worker on it. One bind job hangs in the
kernel double's drivers_probe while scan jobs and a second bind wait behind it in Redis;
then Redis is stopped and started again on the same port, empty. The worker reconnects,
the running job finishes, and the heartbeat sends again the queued jobs whose messages
Redis forgot: the messages the web app stored with them, unchanged (the worker has a
host's key material, the web app's certificate and no key, so it could not sign them).
Every job ends succeeded, each ran once (one validate step, one outcome in the audit), and
a job sent after the restart runs too; so does one sent after a second restart that finds
the worker idle, waiting on its queue.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.kerneldouble.faults import hang
from passthrough.pci.scan import scan
from tests.test_hosts_keys import host_keys
from tests.worker_support import REDIS_SERVER, PrivateRedis, operator_named, point_broker, requires_redis, wait_for_job
from webui.audit.models import AuditEvent, verify_chain
from webui.hosts.models import Host
from webui.jobs.models import Job, State
from webui.jobs.service import submit

pytestmark = [requires_redis, pytest.mark.worker, pytest.mark.slow]

GPU, NIC = "0000:01:00.0", "0000:05:00.0"


def two_group_host() -> HostSpec:
    """A GPU with its audio (group 2) and a NIC alone (group 5): two binds that do not share a lock."""
    return HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=2),
            FunctionSpec(GPU, "10de", "1d01", "030000", "a1", driver="nouveau", iommu_group=2, parent="0000:00:01.0", boot_vga=False, reset_methods=["flr", "bus"]),
            FunctionSpec("0000:01:00.1", "10de", "0fb8", "040300", "a1", driver="snd_hda_intel", iommu_group=2, parent="0000:00:01.0"),
            FunctionSpec(NIC, "8086", "10d3", "020000", driver="e1000e", iommu_group=5),
        ],
        modules=("kvm_intel", "kvm", "vfio", "vfio_pci", "vfio_iommu_type1"),
    )  # fmt: skip


class RestartableRedis(PrivateRedis):
    """The test's own redis-server, which it can stop and start again on the same port and password."""

    def restart(self) -> None:
        self.stop()
        self.process = subprocess.Popen([REDIS_SERVER, str(self.directory / "redis.conf")], start_new_session=True)
        assert self._wait(), (self.directory / "redis.log").read_text()[-2000:]


@pytest.fixture
def own_redis():
    server = RestartableRedis().start()
    yield server
    server.close()


def _wait_for_step(job: Job, name: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job.refresh_from_db()
        if any(step["name"] == name and step.get("ok") is None for step in job.steps):
            return
        assert not job.is_finished, f"job {job.pk} finished before '{name}': {job.message}"
        time.sleep(0.02)
    raise AssertionError(f"job {job.pk} never reached '{name}': {job.steps}")


def _outcomes(job: Job) -> list[str]:
    return list(AuditEvent.objects.filter(job_id=job.pk).exclude(result="requested").values_list("result", flat=True))


def test_a_redis_restart_mid_run_loses_no_job_and_runs_none_twice(start_worker, own_redis, tmp_path):
    root = write_tree(two_group_host(), tmp_path / "host")
    KernelDouble(root, faults=[hang("sys/bus/pci/drivers_probe", 4.0, times=1)])
    worker = start_worker(
        root,
        "redishost",
        REDIS_URL=own_redis.url(0),
        PASSTHROUGH_HEARTBEAT_SECONDS="1",
        PASSTHROUGH_OFFLINE_AFTER="60",
        BROKER_SIGNING_DIR=str(host_keys(tmp_path / "keys")),  # a host's: the web app's certificate, no key
    )
    point_broker(own_redis.url(0))  # the fixture restores the previous broker at the end
    host = Host.objects.get(name="redishost")
    user = operator_named("rita")

    running = submit(host=host, action="bind_vfio", targets=[GPU], parameters={"release_console": False}, user=user)
    _wait_for_step(running, "bind")  # hung in drivers_probe, the message delivered and not yet acknowledged
    waiting = [submit(host=host, action="scan", targets=[], user=user) for _ in range(3)]
    waiting.append(
        submit(host=host, action="bind_vfio", targets=[NIC], parameters={"release_console": False}, user=user)
    )
    import redis

    assert redis.Redis.from_url(own_redis.url(0)).llen(host.queue) == len(waiting)
    own_redis.restart()
    assert redis.Redis.from_url(own_redis.url(0)).dbsize() == 0, "a restart without persistence forgets every message"

    after = submit(host=host, action="scan", targets=[], user=user)
    jobs = [running, *waiting, after]
    stored = {job.pk: job.signed_message for job in jobs}
    for job in jobs:
        wait_for_job(job, timeout=60)
    assert {job.pk: job.signed_message for job in jobs} == stored, "sent again as stored, never signed again"
    assert worker.process.poll() is None, "the worker reconnected rather than exit"
    for job in jobs:
        assert job.state == State.SUCCEEDED, f"job {job.pk} ({job.action}): {job.state}: {job.message}"
        assert _outcomes(job) == ["succeeded"], f"job {job.pk} has outcomes {_outcomes(job)}"
        names = [step["name"] for step in job.steps]
        assert names.count("validate" if job.action == "bind_vfio" else "snapshot") == 1, names
    inventory = scan(root)
    assert {inventory.device(a).driver for a in (GPU, "0000:01:00.1", NIC)} == {"vfio-pci"}
    log = worker.log.read_text()
    assert "sent 4 queued job(s) again: the broker had lost their messages" in log, log[-3000:]

    # Restarted again while the worker waits on the queue: its consumer reconnects and takes the next job.
    own_redis.restart()
    again = wait_for_job(submit(host=host, action="scan", targets=[], user=user), timeout=60)
    assert again.state == State.SUCCEEDED and _outcomes(again) == ["succeeded"], again.message
    assert worker.process.poll() is None
    assert verify_chain().ok
