"""A job from request to a changed tree, through the real Redis and a real worker process."""

from __future__ import annotations

import pytest

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.tree import write_tree
from passthrough.pci.scan import scan
from tests.worker_support import operator_named, point_broker, requires_redis, wait_for_job
from webui.audit.models import AuditEvent, verify_chain
from webui.hosts.models import Host
from webui.jobs.models import GroupLock, State
from webui.jobs.service import submit

pytestmark = [requires_redis, pytest.mark.worker]


def gpu_host() -> HostSpec:
    return HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=2),
            FunctionSpec("0000:01:00.0", "10de", "1d01", "030000", "a1", driver="nouveau", iommu_group=2, parent="0000:00:01.0", boot_vga=False, reset_methods=["flr", "bus"]),
            FunctionSpec("0000:01:00.1", "10de", "0fb8", "040300", "a1", driver="snd_hda_intel", iommu_group=2, parent="0000:00:01.0"),
        ],
        modules=("kvm_intel", "kvm", "vfio", "vfio_pci", "vfio_iommu_type1"),
    )  # fmt: skip


def test_a_bind_job_runs_on_the_worker_and_the_snapshot_shows_vfio(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    start_worker(root, "gpuhost")
    host = Host.objects.get(name="gpuhost")
    job = wait_for_job(
        submit(
            host=host,
            action="bind_vfio",
            targets=["0000:01:00.0"],
            parameters={"release_console": False},
            user=operator_named("alice"),
        )
    )
    assert job.state == State.SUCCEEDED, job.message
    assert [step["name"] for step in job.steps][:2] == ["validate", "snapshot"]
    assert job.steps[-1]["name"] == "snapshot" and job.steps[-1]["ok"]
    assert scan(root).device("0000:01:00.1").driver == "vfio-pci"
    assert job.snapshot.parsed.device("0000:01:00.0").driver == "vfio-pci"
    assert not GroupLock.objects.exists()
    events = list(AuditEvent.objects.filter(job_id__isnull=False).values_list("actor", "action", "result"))
    assert events == [("alice", "bind_vfio", "requested"), ("alice", "bind_vfio", "succeeded")]
    assert verify_chain().ok


def test_signed_messages_for_no_job_or_with_extra_arguments_run_nothing_and_are_counted(start_worker, tmp_path):
    import time

    from webui.audit.models import RefusalBurst
    from webui.jobs.tasks import TASKS

    root = write_tree(gpu_host(), tmp_path / "host")
    worker = start_worker(root, "gpuhost")
    common = {"host": "gpuhost", "issued_at": time.time()}
    TASKS["bind_vfio"].apply_async(
        kwargs={"job_id": 999, **common, "address": "0000:01:00.0", "confirm": None, "release_console": False},
        queue="host.gpuhost",
    )
    TASKS["bind_vfio"].apply_async(
        kwargs={"job_id": 1, **common, "address": "0000:01:00.0", "extra": 1}, queue="host.gpuhost"
    )

    deadline = time.time() + 20
    while sum(RefusalBurst.objects.values_list("count", flat=True)) < 2 and time.time() < deadline:
        time.sleep(0.1)
    refused = list(AuditEvent.objects.filter(result="refused").values_list("error", flat=True))
    assert len(refused) == 1 and "job 999, which does not exist" in refused[0]  # the burst's first
    assert RefusalBurst.objects.get().count == 2
    assert "unexpected argument(s) extra" in worker.log.read_text()
    assert scan(root).device("0000:01:00.0").driver == "nouveau"


def test_a_bind_that_fails_on_the_second_function_rolls_both_back(start_worker, tmp_path):
    from passthrough.kerneldouble import KernelDouble
    from passthrough.kerneldouble.faults import probe_fails

    root = write_tree(gpu_host(), tmp_path / "host")
    KernelDouble(root, faults=[probe_fails("0000:01:00.1", driver="vfio-pci")])
    start_worker(root, "gpuhost")
    host = Host.objects.get(name="gpuhost")
    job = wait_for_job(
        submit(
            host=host,
            action="bind_vfio",
            targets=["0000:01:00.0"],
            parameters={"release_console": False},
            user=operator_named("bob"),
        )
    )
    assert job.state == State.ROLLED_BACK, job.message
    inventory = scan(root)
    assert inventory.device("0000:01:00.0").driver == "nouveau"
    assert inventory.device("0000:01:00.1").driver == "snd_hda_intel"
    assert inventory.device("0000:01:00.0").driver_override is None
    assert "every change was undone" in job.message
    final = AuditEvent.objects.filter(job_id=job.pk).exclude(result="requested").get()
    assert final.result == "rolled_back"
    assert "0000:01:00.1" in final.error
    assert final.state_before == final.state_after
    assert job.snapshot.parsed.device("0000:01:00.0").driver == "nouveau"


def test_one_job_at_a_time_per_group(start_worker, tmp_path):
    from passthrough.kerneldouble import KernelDouble
    from passthrough.kerneldouble.faults import hang
    from webui.jobs.closing import JobRefused

    root = write_tree(gpu_host(), tmp_path / "host")
    KernelDouble(root, faults=[hang("sys/bus/pci/drivers_probe", 2.0, times=1)])
    start_worker(root, "gpuhost")
    host = Host.objects.get(name="gpuhost")
    first = submit(
        host=host,
        action="bind_vfio",
        targets=["0000:01:00.0"],
        parameters={"release_console": False},
        user=operator_named("a"),
    )
    with pytest.raises(JobRefused, match="already has a job in progress"):
        submit(host=host, action="restore_driver", targets=["0000:01:00.1"], parameters={}, user=operator_named("b"))
    assert wait_for_job(first).state == State.SUCCEEDED
    second = wait_for_job(
        submit(host=host, action="restore_driver", targets=["0000:01:00.1"], parameters={}, user=operator_named("b"))
    )
    assert second.state == State.SUCCEEDED, second.message
    assert scan(root).device("0000:01:00.0").driver == "nouveau"


def test_a_dead_broker_fails_the_request_clearly_and_changes_nothing(transactional_db, tmp_path):
    from webui.jobs.models import Job
    from webui.jobs.service import BrokerUnavailable

    host = Host.objects.create(name="lonely")
    saved = point_broker("redis://:password@127.0.0.1:1/0")  # nothing listens on port 1
    try:
        with pytest.raises(BrokerUnavailable, match="cannot be reached"):
            submit(host=host, action="scan", targets=[], user=operator_named("carol"))
    finally:
        point_broker(saved)
    job = Job.objects.get()
    assert job.state == State.FAILED and "cannot be reached" in job.message
    assert list(AuditEvent.objects.filter(job_id=job.pk).values_list("result", flat=True)) == ["requested", "failed"]
