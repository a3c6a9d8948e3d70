"""The "Test the resets" job end to end: from the device page through the real Redis and a real worker
to the kernel double, its per-method record on the device page, and `manage.py device test-reset`."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.urls import reverse

from passthrough.host import HostTree
from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.pci.scan import scan
from tests.test_jobs_worker import gpu_host
from tests.web_support import signed_in
from tests.worker_support import operator_named, requires_redis, wait_for_job
from webui.audit.models import AuditEvent, verify_chain
from webui.hosts.models import Host
from webui.hosts.snapshots import take_snapshot, this_host
from webui.jobs.messages import SCHEMAS, ArgumentRefused, validate_arguments
from webui.jobs.models import Action, GroupLock, Job, State
from webui.jobs.service import submit

GPU = "0000:01:00.0"  # lists flr and bus; its HDMI audio 01:00.1 shares bus 01
METHOD = f"sys/bus/pci/devices/{GPU}/reset_method"


@requires_redis
@pytest.mark.worker
def test_the_page_runs_the_test_on_the_worker_and_shows_each_methods_outcome(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    start_worker(root, "gpuhost")
    host = Host.objects.get(name="gpuhost")
    alice = operator_named("alice")
    page = signed_in(alice)
    device_page = reverse("device", kwargs={"host": "gpuhost", "address": GPU})
    before = page.get(device_page).content.decode()
    assert '<p class="muted" id="reset-test-blocked">It is bound to nouveau' in before
    bind = submit(host=host, action="bind_vfio", targets=[GPU], parameters={"release_console": False}, user=alice)
    assert wait_for_job(bind).state == State.SUCCEEDED, bind.message

    posted = page.post(reverse("reset_device", kwargs={"host": "gpuhost", "address": GPU}), {"test": "1"})
    job = wait_for_job(Job.objects.get(action=Action.TEST_RESET))

    assert posted.status_code == 302 and posted["Location"] == reverse("job", kwargs={"pk": job.pk})
    assert job.state == State.SUCCEEDED, job.message
    assert job.message == f"Test the resets done for {GPU}."
    methods = job.result["parameters"]["methods"]
    assert [(item["method"], item["outcome"]) for item in methods] == [("flr", "worked"), ("bus", "not_tried")]
    assert KernelDouble(root).state.resets == [{"address": GPU, "method": "flr"}]
    assert HostTree(root).read(METHOD) == "flr bus"
    assert scan(root).device(GPU).driver == "vfio-pci"
    assert job.steps[-1]["name"] == "snapshot" and job.steps[-1]["ok"]
    assert not GroupLock.objects.exists()
    audit = list(AuditEvent.objects.filter(job_id=job.pk).values_list("action", "result"))
    assert audit == [("test_reset", "requested"), ("test_reset", "succeeded")]
    assert verify_chain().ok

    html = page.get(device_page).content.decode()
    assert 'id="reset-test-results"' in html and f"job {job.pk}</a>: succeeded" in html
    assert '<th><code>flr</code></th><td><span class="pass-text">worked</span>' in html
    assert (
        '<th><code>bus</code></th><td><span class="muted">not tried</span> · not tried: the kernel refuses it (ENOTTY)'
        in html
    )


@requires_redis
@pytest.mark.worker
def test_the_worker_refuses_a_function_on_its_host_driver_and_changes_nothing(start_worker, tmp_path):
    root = write_tree(gpu_host(), tmp_path / "host")
    start_worker(root, "gpuhost")
    host = Host.objects.get(name="gpuhost")
    job = wait_for_job(
        submit(host=host, action="test_reset", targets=[GPU], parameters={"confirm": None}, user=operator_named("bob"))
    )
    assert job.state == State.FAILED
    assert "driven by nouveau" in job.message and "bound to vfio-pci" in job.message
    assert [step["name"] for step in job.steps] == ["validate", "snapshot"]
    assert KernelDouble(root).state.resets == [] and HostTree(root).read(METHOD) == "flr bus"
    assert AuditEvent.objects.filter(job_id=job.pk).exclude(result="requested").get().result == "refused"


@pytest.mark.django_db
def test_the_page_refuses_before_any_job_when_the_function_is_not_on_vfio(client, tmp_path):
    from tests.web_support import make_user

    root = write_tree(gpu_host(), tmp_path / "host")
    host = Host.objects.create(name="gpuhost", root=str(root))
    take_snapshot(host, HostTree(str(root)), "startup")
    page = signed_in(make_user("otto", "operator"))

    response = page.post(
        reverse("reset_device", kwargs={"host": "gpuhost", "address": GPU}), {"test": "1"}, follow=True
    )

    assert not Job.objects.exists()
    assert "The resets of 0000:01:00.0 were not tested: It is bound to nouveau" in response.content.decode()


def test_a_test_reset_message_takes_an_address_and_a_confirmation_only():
    assert set(SCHEMAS[Action.TEST_RESET]) == {"address", "confirm"}
    sent = {"job_id": 3, "host": "gpuhost", "issued_at": 1.5e9, "address": GPU, "confirm": None}
    assert validate_arguments(Action.TEST_RESET, (), sent) == sent
    with pytest.raises(ArgumentRefused, match="unexpected argument"):
        validate_arguments(Action.TEST_RESET, (), {**sent, "method": "bus"})


@pytest.mark.django_db(transaction=True)
def test_the_device_command_tests_the_resets_from_a_root_shell(tmp_path, settings, capsys):
    root = write_tree(gpu_host(), tmp_path / "host")
    settings.PASSTHROUGH_ROOT = str(root)
    settings.PASSTHROUGH_KERNEL = "double"
    settings.PASSTHROUGH_HOSTNAME = "shellhost"
    take_snapshot(this_host(), KernelDouble(root), "startup")
    call_command("device", "bind", GPU)
    capsys.readouterr()

    call_command("device", "test-reset", "01:00.0")

    out = capsys.readouterr().out
    assert "  flr              worked             the function came back: its config space answers" in out
    assert "  bus              not tried          not tried: the kernel refuses it (ENOTTY)" in out
    assert out.rstrip().endswith(f"succeeded: Test the resets done for {GPU}.")
    call_command("device", "test-reset", GPU, "--format", "json")
    data = json.loads(capsys.readouterr().out)
    assert data["job"]["action"] == "test_reset" and data["job"]["state"] == "succeeded"
    assert [item["outcome"] for item in data["result"]["parameters"]["methods"]] == ["worked", "not_tried"]
    assert KernelDouble(root).state.resets == [{"address": GPU, "method": "flr"}] * 2


@pytest.mark.django_db
def test_the_device_page_flags_an_amd_gpu_with_the_reset_bug_before_any_vm_starts(tmp_path):
    from tests.kernelhosts import threadripper
    from tests.web_support import make_user, snapshot_host

    snapshot_host("tr", threadripper(), tmp_path / "tr")
    page = signed_in(make_user("vera", "viewer"))

    html = page.get(reverse("device", kwargs={"host": "tr", "address": "0000:43:00.0"})).content.decode()

    assert "An AMD Polaris 10 GPU, one with the AMD reset bug" in html
    assert "Its reset_method does not list device_specific" in html
    assert "Testing the resets reads whether vendor_reset is loaded" in html
    other = page.get(reverse("device", kwargs={"host": "tr", "address": "0000:43:00.1"})).content.decode()
    assert "AMD reset bug" not in other
