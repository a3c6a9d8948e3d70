"""`manage.py device ...`: recovery from a root shell when the web app or Redis is down."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.pci.scan import scan
from tests.test_jobs_worker import gpu_host
from webui.audit.models import AuditEvent, verify_chain
from webui.hosts.snapshots import take_snapshot, this_host
from webui.jobs.models import GroupLock, Job, State

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tree(tmp_path, settings):
    root = write_tree(gpu_host(), tmp_path / "host")
    settings.PASSTHROUGH_ROOT = str(root)
    settings.PASSTHROUGH_KERNEL = "double"
    settings.PASSTHROUGH_HOSTNAME = "shellhost"
    take_snapshot(this_host(), KernelDouble(root), "startup")
    return root


def test_bind_and_restore_from_the_shell_are_jobs_with_audit(tree, capsys):
    call_command("device", "bind", "01:00.0")
    assert "succeeded" in capsys.readouterr().out
    assert scan(tree).device("0000:01:00.1").driver == "vfio-pci"
    call_command("device", "restore", "0000:01:00.0", "--format", "json")
    data = json.loads(capsys.readouterr().out)
    assert data["job"]["state"] == "succeeded"
    assert scan(tree).device("0000:01:00.0").driver == "nouveau"
    jobs = list(Job.objects.order_by("id").values_list("action", "state", "actor"))
    assert [(action, state) for action, state, _ in jobs] == [
        ("bind_vfio", "succeeded"),
        ("restore_driver", "succeeded"),
    ]
    assert all(actor.startswith("shell:") for _, _, actor in jobs)
    assert list(AuditEvent.objects.values_list("source", "result")) == [("shell", "succeeded"), ("shell", "succeeded")]
    assert verify_chain().ok and not GroupLock.objects.exists()


def test_a_refused_operation_exits_non_zero_and_is_audited(tree, capsys):
    with pytest.raises(SystemExit) as exited:
        call_command("device", "sriov", "01:00.0", "4")
    assert exited.value.code == 1
    job = Job.objects.get()
    assert job.state == State.FAILED and "SR-IOV" in job.message
    assert AuditEvent.objects.get().result == "refused"


def test_a_malformed_address_changes_nothing(tree):
    with pytest.raises(CommandError, match="is not a PCI address"):
        call_command("device", "reset", "01:00")
    assert not Job.objects.exists() and not AuditEvent.objects.exists()


def test_a_group_with_a_job_in_progress_is_refused(tree):
    other = Job.objects.create(
        host=this_host(), actor="web", action="bind_vfio", targets=["0000:01:00.0"], group=2, state=State.RUNNING
    )
    GroupLock.objects.create(host=this_host(), group=2, job=other)
    with pytest.raises(CommandError, match="already has a job in progress"):
        call_command("device", "bind", "01:00.0")
    assert scan(tree).device("0000:01:00.0").driver == "nouveau"


@pytest.fixture
def console_tree(tmp_path, settings):
    """The X570 whose boot GT 710 has no PCI driver but carries the efifb console.

    Its HDMI audio function is not exposed, so the GT 710 is alone on its bus and the bus
    reset it lists can work (beside the audio function the kernel refuses it).
    """
    from dataclasses import replace

    from tests.kernelhosts import GT710, GT710_AUDIO, x570

    spec = x570(console="efifb")
    spec.functions = [
        replace(f, driver=None) if f.address == GT710.address else f
        for f in spec.functions
        if f.address != GT710_AUDIO.address
    ]
    root = write_tree(spec, tmp_path / "x570")
    settings.PASSTHROUGH_ROOT = str(root)
    settings.PASSTHROUGH_KERNEL = "double"
    settings.PASSTHROUGH_HOSTNAME = "x570"
    take_snapshot(this_host(), KernelDouble(root), "startup")
    return root


def test_a_reset_of_the_console_gpu_from_the_shell_needs_confirm_like_bind(console_tree, capsys):
    with pytest.raises(SystemExit):
        call_command("device", "reset", "0c:00.0")
    refused = Job.objects.get()
    assert refused.state == State.FAILED and "touches host-critical functions" in refused.message
    assert "firmware framebuffer" in refused.message and "type 0000:0c:00.0 as the confirmation" in refused.message
    assert KernelDouble(console_tree).state.resets == []

    call_command("device", "reset", "0c:00.0", "--confirm", "0000:0c:00.0")
    assert "succeeded" in capsys.readouterr().out
    assert Job.objects.latest("id").parameters == {"method": None, "confirm": "0000:0c:00.0"}
    assert KernelDouble(console_tree).state.resets == [{"address": "0000:0c:00.0", "method": "bus"}]


def test_the_lpc_bridge_is_not_reset_from_the_shell_whatever_is_confirmed(console_tree):
    with pytest.raises(SystemExit):
        call_command("device", "reset", "00:14.3", "--method", "pm", "--confirm", "0000:00:14.3")
    assert "LPC/ISA bridge; the host cannot run without it" in Job.objects.get().message
