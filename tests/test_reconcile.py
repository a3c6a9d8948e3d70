"""The reconciler puts back what an interrupted job left half-done, for each kind of job."""

from __future__ import annotations

import pytest

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.pci.scan import scan
from tests.test_jobs_worker import gpu_host
from webui.audit.models import AuditEvent
from webui.hosts.snapshots import take_snapshot, this_host
from webui.jobs.models import GroupLock, Job, State
from webui.jobs.reconcile import reconcile

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def host_settings(settings):
    settings.PASSTHROUGH_HOSTNAME = "recon"
    settings.PASSTHROUGH_KERNEL = "double"
    return settings


def _running(action: str, target: str, **parameters) -> Job:  # type: ignore[no-untyped-def]
    from django.utils import timezone

    job = Job.objects.create(
        host=this_host(),
        actor="t",
        action=action,
        targets=[target],
        parameters=parameters,
        group=2,
        state=State.RUNNING,
        started=timezone.now(),
    )
    GroupLock.objects.create(host=job.host, group=2, job=job)
    return job


def test_a_function_left_on_no_driver_goes_back_to_its_driver(host_settings, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    double = KernelDouble(root)
    take_snapshot(this_host(), double, "startup")
    _running("bind_vfio", "0000:01:00.0")
    # What a worker killed mid-bind leaves: override set, unbound, no probe yet.
    double.write("sys/bus/pci/devices/0000:01:00.0/driver_override", "vfio-pci")
    double.write("sys/bus/pci/drivers/nouveau/unbind", "0000:01:00.0")
    assert scan(root).device("0000:01:00.0").driver is None
    [closed] = reconcile(this_host(), double)
    assert closed.state == State.ROLLED_BACK
    function = scan(root).device("0000:01:00.0")
    assert (function.driver, function.driver_override) == ("nouveau", None)
    assert not GroupLock.objects.exists()
    event = AuditEvent.objects.get()
    assert event.result == "rolled_back" and event.parameters["reconciled"] is True


def test_an_interrupted_reset_gets_its_reset_methods_back(host_settings, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    double = KernelDouble(root)
    take_snapshot(this_host(), double, "startup")
    job = _running("reset", "0000:01:00.0", method="bus")
    double.write("sys/bus/pci/devices/0000:01:00.0/reset_method", "bus")
    [closed] = reconcile(this_host(), double)
    assert closed.state == State.ROLLED_BACK, closed.message
    assert scan(root).device("0000:01:00.0").reset_methods == ["flr", "bus"]
    assert job.pk == closed.pk


def test_an_interrupted_vf_change_returns_to_the_count_before(host_settings, tmp_path):
    spec = HostSpec(
        functions=[
            FunctionSpec(
                "0000:02:00.0",
                "8086",
                "10c9",
                "020000",
                "01",
                driver="igb",
                iommu_group=2,
                sriov_totalvfs=7,
                extra={"sriov_vf_device": "10ca"},
            )
        ],
        modules=("igb", "igbvf", "vfio", "vfio_pci"),
    )
    root = write_tree(spec, tmp_path / "host")
    double = KernelDouble(root)
    double.write("sys/bus/pci/devices/0000:02:00.0/sriov_numvfs", "2")
    take_snapshot(this_host(), double, "startup")
    _running("set_sriov_vfs", "0000:02:00.0", count=4)
    double.write("sys/bus/pci/devices/0000:02:00.0/sriov_numvfs", "0")  # the worker died between "0" and "4"
    [closed] = reconcile(this_host(), double)
    assert closed.state == State.ROLLED_BACK, closed.message
    assert scan(root).device("0000:02:00.0").sriov_numvfs == 2


def test_nothing_running_means_nothing_to_do(host_settings, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    assert reconcile(this_host(), KernelDouble(root)) == []
    assert not AuditEvent.objects.exists()


def test_the_heartbeat_closes_a_job_whose_owner_outlived_the_worker_start(host_settings, tmp_path):
    """A pool process asleep in the kernel survives SIGKILL (seen on a real kernel: an unbind of a
    sound card in use sleeps in snd_card_free), so the next worker's start-up finds the job's owner
    alive and leaves the job; once that process ends, the heartbeat puts the group back."""
    import subprocess
    import sys

    from webui.jobs import owner
    from webui.jobs.worker import beat

    root = write_tree(gpu_host(), tmp_path / "host")
    host_settings.PASSTHROUGH_ROOT = str(root)
    double = KernelDouble(root)
    take_snapshot(this_host(), double, "startup")
    job = _running("bind_vfio", "0000:01:00.0")
    double.write("sys/bus/pci/devices/0000:01:00.0/driver_override", "vfio-pci")
    double.write("sys/bus/pci/drivers/nouveau/unbind", "0000:01:00.0")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = owner.current()
        Job.objects.filter(pk=job.pk).update(
            owner=f"{me.machine} {me.boot} {sleeper.pid} {owner._start_time(sleeper.pid)}"
        )
        assert reconcile(this_host(), double) == []  # the start-up: its owner still runs
        beat()
        job.refresh_from_db()
        assert job.state == State.RUNNING and scan(root).device("0000:01:00.0").driver is None
    finally:
        sleeper.kill()
        sleeper.wait()
    beat()
    job.refresh_from_db()
    assert job.state == State.ROLLED_BACK, job.message
    function = scan(root).device("0000:01:00.0")
    assert (function.driver, function.driver_override) == ("nouveau", None)
    assert not GroupLock.objects.exists()
    assert AuditEvent.objects.get(job_id=job.pk).parameters["reconciled"] is True


def test_a_vm_attach_cut_short_says_the_vm_may_hold_part_of_it(host_settings, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    double = KernelDouble(root)
    take_snapshot(this_host(), double, "startup")
    _running("vm_attach", "0000:01:00.0", vm="libvirt:win11", live=None, confirm=None, fingerprint=None)
    [closed] = reconcile(this_host(), double)
    assert closed.state == State.FAILED
    assert "while changing libvirt:win11. Its configuration may hold part of the change" in closed.message
    assert not GroupLock.objects.exists()
    assert AuditEvent.objects.get().parameters["reconciled"] is True
