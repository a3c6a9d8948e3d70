"""Several hosts' workers on one install: each registers its host, and one's crash is its own.

Real worker processes, each on its own host tree and queue (``host.<name>``), sharing the
test's Redis and database as the workers of a multi-host install share theirs.
"""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from passthrough.hosttrees.spec import HostSpec
from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.kerneldouble.faults import hang
from passthrough.pci.scan import scan
from tests.test_jobs_worker import gpu_host
from tests.worker_support import operator_named, requires_redis, wait_for_job
from webui.audit.models import AuditEvent, verify_chain
from webui.hosts.models import Host
from webui.hosts.registration import app_version
from webui.jobs.models import GroupLock, Job, State
from webui.jobs.service import submit

pytestmark = [requires_redis, pytest.mark.worker]
GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"
FAST = {"PASSTHROUGH_HEARTBEAT_SECONDS": "1", "PASSTHROUGH_OFFLINE_AFTER": "3"}


def amd_host_without_iommu() -> HostSpec:
    spec = gpu_host()
    spec.cpu_vendor, spec.iommu, spec.osrelease = "AuthenticAMD", None, "6.1.0-18-amd64"
    for function in spec.functions:
        function.iommu_group = None
    return spec


def _bind(host: Host, user_name: str = "otto") -> Job:
    return submit(
        host=host,
        action="bind_vfio",
        targets=[GPU],
        parameters={"release_console": False},
        user=operator_named(user_name),
    )


def _wait_until(condition, timeout: float = 30, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def _wait_for_step(job: Job, name: str) -> None:
    def reached() -> bool:
        job.refresh_from_db()
        assert not job.is_finished, f"job {job.pk} finished before '{name}': {job.message}"
        return any(step["name"] == name and step.get("ok") is None for step in job.steps)

    _wait_until(reached, what=f"job {job.pk} reaching '{name}'")


def test_each_worker_registers_its_host_when_it_starts(start_worker, tmp_path):
    before = timezone.now()
    start_worker(write_tree(gpu_host(), tmp_path / "intel"), "pve1")
    start_worker(write_tree(amd_host_without_iommu(), tmp_path / "amd"), "pve2")
    pve1, pve2 = Host.objects.get(name="pve1"), Host.objects.get(name="pve2")

    assert (pve1.kernel, pve1.cpu_vendor, pve1.cpu_vendor_name) == ("6.8.12-4-pve", "GenuineIntel", "Intel")
    assert pve1.iommu_enabled is True and pve1.iommu_detail.startswith("The IOMMU is on")
    assert (pve2.kernel, pve2.cpu_vendor_name, pve2.iommu_enabled) == ("6.1.0-18-amd64", "AMD", False)
    assert pve2.iommu_detail.startswith("No IOMMU is active: /sys/class/iommu is empty")
    for host in (pve1, pve2):
        assert host.worker_version == app_version() and host.worker_version.startswith("0.1.0")
        assert host.registered >= before and host.last_seen >= host.registered
        assert not host.is_offline


def test_a_worker_killed_and_restarted_on_one_host_leaves_the_others_untouched(start_worker, tmp_path, settings):
    settings.PASSTHROUGH_OFFLINE_AFTER = 3  # the web side's view, as the workers' own
    alpha_root = write_tree(gpu_host(), tmp_path / "alpha")
    beta_root = write_tree(gpu_host(), tmp_path / "beta")
    alpha_double = KernelDouble(alpha_root, faults=[hang("sys/bus/pci/drivers_probe", 60, times=1)])
    KernelDouble(beta_root, faults=[hang("sys/bus/pci/drivers_probe", 3, times=1)])
    alpha = start_worker(alpha_root, "alpha", **FAST)
    beta = start_worker(beta_root, "beta", **FAST)
    alpha_host, beta_host = Host.objects.get(name="alpha"), Host.objects.get(name="beta")
    beta_pid = beta.process.pid

    stranded = _bind(alpha_host)
    _wait_for_step(stranded, "bind")
    beta_bind = _bind(beta_host)
    _wait_for_step(beta_bind, "bind")  # both hosts mid-bind, each on its own worker
    beta_scan = submit(host=beta_host, action="scan", targets=[], user=operator_named("otto"))
    alpha.kill()
    killed_at = timezone.now()

    assert wait_for_job(beta_bind).state == State.SUCCEEDED, beta_bind.message
    assert wait_for_job(beta_scan).state == State.SUCCEEDED, beta_scan.message
    _wait_until(lambda: Host.objects.get(name="alpha").is_offline, what="alpha offline")
    alpha_host, beta_host = Host.objects.get(name="alpha"), Host.objects.get(name="beta")
    assert alpha_host.last_seen <= killed_at < beta_host.last_seen and not beta_host.is_offline
    stranded.refresh_from_db()
    assert stranded.state == State.RUNNING, "only alpha's own next worker may put alpha back"
    assert scan(alpha_root).device(GPU).driver is None  # unbound, not yet bound: alpha as the kill left it

    waiting = submit(host=alpha_host, action="scan", targets=[], user=operator_named("otto"))
    assert waiting.message.startswith("alpha has not been seen for ")
    assert waiting.message.endswith(" seconds; the job waits for it until it expires.")

    beta_after = {address: scan(beta_root).device(address).driver for address in (GPU, AUDIO)}
    alpha_double.clear_faults()
    alpha.start()  # reconciles alpha before it reports ready
    assert wait_for_job(stranded, timeout=10).state == State.ROLLED_BACK, stranded.message
    assert wait_for_job(waiting).state == State.SUCCEEDED, waiting.message
    assert {scan(alpha_root).device(a).driver for a in (GPU, AUDIO)} == {"nouveau", "snd_hda_intel"}

    # beta: the same worker process throughout, its tree and its jobs as beta's own work left them.
    assert beta.process.poll() is None and beta.process.pid == beta_pid
    assert {address: scan(beta_root).device(address).driver for address in (GPU, AUDIO)} == beta_after
    assert set(beta_after.values()) == {"vfio-pci"}
    beta_events = AuditEvent.objects.filter(host="beta")
    assert not [event for event in beta_events if event.parameters.get("reconciled")]
    assert sorted(beta_events.exclude(result="requested").values_list("result", flat=True)) == ["succeeded"] * 2
    assert not GroupLock.objects.exists() and not Job.objects.filter(state__in=[State.RUNNING, State.QUEUED]).exists()
    assert verify_chain().ok
