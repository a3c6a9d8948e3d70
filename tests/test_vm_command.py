"""`manage.py vm ...`: the host's VMs, and giving one a device from a root shell, as jobs with audit and undo.

On a Proxmox VE node built from qemu-server's own test configs, with the kernel double
answering sysfs and the qm double answering ``qm`` (passthrough/kerneldouble/qm.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from tests.kernelhosts import x570
from tests.proxmox_support import conf_text
from webui.audit.models import AuditEvent, verify_chain
from webui.hosts.snapshots import take_snapshot, this_host
from webui.jobs.models import GroupLock, Job, State

pytestmark = pytest.mark.django_db(transaction=True)
GPU, AUDIO = "0000:0b:00.0", "0000:0b:00.1"


@pytest.fixture
def node(tmp_path, settings) -> Path:
    files = {"etc/hostname": "pve\n", "etc/pve/qemu-server/101.conf": conf_text("q35-win10-hostpci.conf"),
             "etc/pve/qemu-server/102.conf": conf_text("plain.conf")}  # fmt: skip
    root = Path(write_tree(x570(files=files), tmp_path / "pve"))
    settings.PASSTHROUGH_ROOT = str(root)
    settings.PASSTHROUGH_KERNEL = "double"
    settings.PASSTHROUGH_HOSTNAME = "pve"
    take_snapshot(this_host(), KernelDouble(root), "startup")
    return root


def conf(root: Path, vmid: str) -> str:
    return (root / f"etc/pve/qemu-server/{vmid}.conf").read_text()


def test_list_names_every_vm_with_what_it_holds_and_why_other_kinds_were_not_read(node, capsys):
    call_command("vm", "list")
    out = capsys.readouterr().out
    assert "proxmox: " in out and "proxmox:101" in out and "proxmox:102" in out
    assert "libvirt (not read): libvirt is not read on a tree that is not the live host." in out
    call_command("vm", "list", "--format", "json")
    data = json.loads(capsys.readouterr().out)
    proxmox = next(source for source in data["sources"] if source["kind"] == "proxmox")
    assert proxmox["available"] and {vm["ref"] for vm in proxmox["vms"]} == {"proxmox:101", "proxmox:102"}
    assert all("config" not in vm and len(vm["fingerprint"]) == 16 for vm in proxmox["vms"])


def test_attach_is_a_job_with_the_diff_and_audit_and_undo_puts_the_conf_back(node, capsys):
    before = conf(node, "101")
    call_command("vm", "attach", "101", "0b:00.0")
    out = capsys.readouterr().out
    assert "+hostpci2: 0b:00,pcie=1" in out
    job = Job.objects.get(action="vm_attach")
    assert job.state == State.SUCCEEDED and job.actor.startswith("shell:")
    assert job.targets == [GPU] and job.parameters["vm"] == "101"
    assert f"To undo: manage.py vm undo {job.pk}" in out
    assert "hostpci2: 0b:00,pcie=1" in conf(node, "101")
    event = AuditEvent.objects.get(action="vm_attach")
    assert event.result == "succeeded" and event.source == "shell" and event.job_id == job.pk
    call_command("vm", "undo", str(job.pk), "--format", "json")
    undo = json.loads(capsys.readouterr().out)
    assert undo["job"]["state"] == "succeeded"
    assert conf(node, "101") == before
    assert verify_chain().ok and not GroupLock.objects.exists()
    # The snapshot the undo job ended with no longer shows the GPU in 101.
    vms = this_host().latest_snapshot().vm_inventory
    assert vms.find("proxmox:101").holds(GPU) is None


def test_a_device_another_vm_holds_is_refused_as_a_failed_audited_job(node, capsys):
    call_command("vm", "attach", "proxmox:102", "0b:00.1", "--config-only")
    capsys.readouterr()
    before = conf(node, "101")
    with pytest.raises(SystemExit) as exited:
        call_command("vm", "attach", "101", "0b:00.0")
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "already belongs to proxmox:102" in out
    refused = Job.objects.filter(action="vm_attach").order_by("-id").first()
    assert refused.state == State.FAILED
    assert AuditEvent.objects.filter(action="vm_attach").order_by("-id").first().result == "refused"
    assert conf(node, "101") == before


def test_detach_takes_the_whole_card_back(node, capsys):
    call_command("vm", "attach", "102", "0b:00.0", "--format", "json")
    assert json.loads(capsys.readouterr().out)["job"]["state"] == "succeeded"
    call_command("vm", "detach", "102", "0b:00.1")
    out = capsys.readouterr().out
    assert "succeeded" in out
    assert "hostpci" not in conf(node, "102")


def test_bad_input_changes_nothing(node, capsys):
    with pytest.raises(CommandError, match="is not a PCI address"):
        call_command("vm", "attach", "101", "0b:00")
    with pytest.raises(SystemExit):
        call_command("vm", "attach", "win11", "0b:00.0")
    assert "No VM on this host is called 'win11'" in capsys.readouterr().out
    with pytest.raises(CommandError, match="There is no job 999"):
        call_command("vm", "undo", "999")
    assert not Job.objects.filter(state=State.SUCCEEDED).exists()
