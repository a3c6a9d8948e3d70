"""`manage.py device persist|unpersist|cmdline|undo`: boot-file changes from a root shell, planned first."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.ops.persist import RULES_FILE, persisted_bindings
from tests.kernelhosts import GT710, GTX1080TI, GTX1080TI_AUDIO, tree_digest, x570
from tests.test_ops_persist import DEBIAN, EXPECTED_DIFF, debian_files
from webui.audit.models import AuditEvent, verify_chain
from webui.hosts.snapshots import take_snapshot, this_host
from webui.jobs.models import GroupLock, Job, State

pytestmark = pytest.mark.django_db(transaction=True)

GPU, AUDIO = GTX1080TI.address, GTX1080TI_AUDIO.address


def host_tree(spec, path: Path, settings) -> Path:
    root = Path(write_tree(spec, path))
    settings.PASSTHROUGH_ROOT = str(root)
    settings.PASSTHROUGH_KERNEL = "double"
    settings.PASSTHROUGH_HOSTNAME = "shellhost"
    take_snapshot(this_host(), KernelDouble(root), "startup")
    return root


@pytest.fixture
def debian(tmp_path, settings):
    """The X570 as a Debian host: GRUB, initramfs-tools."""
    return host_tree(x570(files=debian_files()), tmp_path / "debian", settings)


def device(capsys, *args: str) -> dict:
    """Run a verb with --format json; its output, parsed."""
    call_command("device", *args, "--format", "json")
    return json.loads(capsys.readouterr().out)


def fails(*args: str) -> int:
    with pytest.raises((SystemExit, CommandError)) as stopped:
        call_command("device", *args)
    error = stopped.value
    return error.returncode if isinstance(error, CommandError) else int(error.code or 0)


def commands_run(root: Path) -> list[list[str]]:
    return KernelDouble(root).state.commands


def assert_one_audit_outcome_per_job() -> None:
    outcomes = Counter(AuditEvent.objects.values_list("job_id", flat=True))
    assert outcomes == Counter(Job.objects.values_list("id", flat=True))
    assert set(AuditEvent.objects.values_list("source", flat=True)) == {"shell"}
    assert verify_chain().ok and not GroupLock.objects.exists()


# persist ------------------------------------------------------------------------------------
def test_persist_plan_prints_the_exact_diff_and_writes_nothing(debian, capsys):
    before = tree_digest(debian)

    call_command("device", "persist", "0b:00.0", "--plan")

    out = capsys.readouterr().out
    assert EXPECTED_DIFF in out
    assert "Then runs: update-initramfs -u -k all" in out
    fingerprint = Job.objects.get().result["plan"]["fingerprint"]
    assert f"  manage.py device persist 0000:0b:00.0 --fingerprint {fingerprint}\n" in out
    assert tree_digest(debian) == before and commands_run(debian) == []
    job = Job.objects.get()
    assert (job.action, job.state, job.targets) == ("plan_change", State.SUCCEEDED, [GPU])
    assert job.parameters == {"change": "persist_binding", "native_drivers": None, "confirm": None}
    assert_one_audit_outcome_per_job()


def test_persist_then_undo_gives_every_byte_back(debian, capsys):
    before = tree_digest(debian)
    plan = device(capsys, "persist", GPU, "--plan")["result"]["plan"]

    call_command("device", "persist", GPU, "--fingerprint", plan["fingerprint"])

    out = capsys.readouterr().out
    persist = Job.objects.get(action="persist_binding")
    assert persist.state == State.SUCCEEDED and persist.parameters["fingerprint"] == plan["fingerprint"]
    assert persisted_bindings(KernelDouble(debian)) == {GPU: "nouveau", AUDIO: "snd_hda_intel"}
    assert commands_run(debian) == [["update-initramfs", "-u", "-k", "all"]]
    assert f"To put the files back: manage.py device undo {persist.pk}" in out

    call_command("device", "undo", str(persist.pk))

    assert "succeeded" in capsys.readouterr().out
    assert tree_digest(debian) == before  # the new files gone, the edited one and its backup as they were
    undo = Job.objects.get(action="undo_change")
    assert undo.parameters == {"undo_of": persist.pk, "force": False}
    assert_one_audit_outcome_per_job()


def test_an_apply_refuses_when_a_file_changed_since_its_plan(debian, capsys):
    fingerprint = device(capsys, "persist", GPU, "--plan")["result"]["plan"]["fingerprint"]
    with open(debian / "etc/initramfs-tools/modules", "a") as handle:
        handle.write("nvme\n")
    edited = tree_digest(debian)

    assert fails("persist", GPU, "--fingerprint", fingerprint) == 1

    refused = Job.objects.get(action="persist_binding")
    assert refused.state == State.FAILED and "The files changed since this plan was shown" in refused.message
    assert tree_digest(debian) == edited
    assert_one_audit_outcome_per_job()


def test_the_native_driver_of_a_function_already_on_vfio_can_be_given(debian, capsys):
    call_command("device", "bind", GPU)
    capsys.readouterr()
    unknown = device(capsys, "persist", GPU, "--plan")["result"]["plan"]
    assert "softdep nouveau" not in unknown["diff"] and any("is not known" in note for note in unknown["notes"])

    given = device(
        capsys, "persist", GPU, "--plan", "--native-driver", f"{GPU}=nouveau", "--native-driver", f"{AUDIO}=none"
    )

    plan = given["result"]["plan"]
    assert "+softdep nouveau pre: vfio-pci\n" in plan["diff"] and "snd_hda_intel" not in plan["diff"]
    assert given["job"]["id"] == Job.objects.latest("id").pk
    assert Job.objects.latest("id").parameters["native_drivers"] == {GPU: "nouveau", AUDIO: None}


def test_binding_the_boot_gpu_at_boot_needs_its_address_typed(tmp_path, settings, capsys):
    root = host_tree(x570(console="efifb", files=debian_files()), tmp_path / "console", settings)
    before = tree_digest(root)

    assert fails("persist", GT710.address, "--plan") == 1
    assert "type 0000:0c:00.0 as the confirmation" in Job.objects.get().message

    call_command("device", "persist", GT710.address, "--confirm", GT710.address)
    assert "succeeded" in capsys.readouterr().out
    assert GT710.address in persisted_bindings(KernelDouble(root))
    assert tree_digest(root) != before
    assert_one_audit_outcome_per_job()


# unpersist ----------------------------------------------------------------------------------
def test_unpersist_plans_then_deletes_the_binding_files(debian, capsys):
    call_command("device", "persist", GPU)
    capsys.readouterr()
    persisted = tree_digest(debian)

    plan = device(capsys, "unpersist", GPU, AUDIO, "--plan")["result"]["plan"]

    assert "+++ /dev/null" in plan["diff"] and tree_digest(debian) == persisted
    call_command("device", "unpersist", GPU, AUDIO, "--fingerprint", plan["fingerprint"])
    assert not os.path.exists(debian / RULES_FILE)
    assert persisted_bindings(KernelDouble(debian)) == {}
    unpersist = Job.objects.get(action="unpersist_binding")
    assert unpersist.state == State.SUCCEEDED and unpersist.targets == [GPU, AUDIO]
    assert_one_audit_outcome_per_job()


def test_unpersisting_what_is_not_bound_at_boot_changes_nothing(debian, capsys):
    before = tree_digest(debian)
    call_command("device", "unpersist", GPU, "--plan")
    out = capsys.readouterr().out
    assert "No file changes" in out and f"Note: {GPU} is not bound at boot by Passthrough Wizard." in out
    assert "--fingerprint" not in out  # nothing to apply
    call_command("device", "unpersist", GPU)
    assert "Nothing to do" in capsys.readouterr().out
    assert tree_digest(debian) == before


# cmdline ------------------------------------------------------------------------------------
def test_cmdline_on_grub_plans_applies_and_undoes(tmp_path, settings, capsys):
    grub = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=pt"\nGRUB_CMDLINE_LINUX=""\n'
    root = host_tree(x570(files=debian_files(**{"etc/default/grub": grub})), tmp_path / "grub", settings)
    before = tree_digest(root)

    call_command("device", "cmdline", "--add", "amd_iommu=on", "--remove", "iommu=pt", "--plan")

    out = capsys.readouterr().out
    assert (
        "--- a/etc/default/grub\n+++ b/etc/default/grub\n@@ -1,3 +1,3 @@\n GRUB_DEFAULT=0\n"
        '-GRUB_CMDLINE_LINUX_DEFAULT="quiet iommu=pt"\n+GRUB_CMDLINE_LINUX_DEFAULT="quiet amd_iommu=on"\n'
        ' GRUB_CMDLINE_LINUX=""\n'
    ) in out
    assert "Then runs: update-grub" in out
    assert tree_digest(root) == before and commands_run(root) == []
    plan = Job.objects.get()
    assert plan.parameters == {"change": "set_kernel_cmdline", "add": ["amd_iommu=on"], "remove": ["iommu=pt"]}
    assert plan.targets == []

    call_command("device", "cmdline", "--add", "amd_iommu=on", "--remove", "iommu=pt")

    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet amd_iommu=on"\n' in (root / "etc/default/grub").read_text()
    assert commands_run(root) == [["update-grub"]]
    applied = Job.objects.get(action="set_kernel_cmdline")
    call_command("device", "undo", str(applied.pk))
    assert tree_digest(root) == before
    assert commands_run(root) == [["update-grub"], ["update-grub"]]
    assert_one_audit_outcome_per_job()


def test_cmdline_on_proxmox_systemd_boot_edits_etc_kernel_cmdline(tmp_path, settings, capsys):
    files = {
        "etc/os-release": DEBIAN,
        "etc/kernel/cmdline": "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n",
        "etc/kernel/proxmox-boot-uuids": "3A1B-2C4D\n",
        "usr/sbin/proxmox-boot-tool": "",
    }
    root = host_tree(x570(files=files), tmp_path / "pve", settings)

    plan = device(capsys, "cmdline", "--add", "amd_iommu=on", "--plan")["result"]["plan"]
    assert "+root=ZFS=rpool/ROOT/pve-1 boot=zfs amd_iommu=on\n" in plan["diff"]
    assert plan["commands"] == ["proxmox-boot-tool refresh"]
    assert (root / "etc/kernel/cmdline").read_text() == files["etc/kernel/cmdline"]

    call_command("device", "cmdline", "--add", "amd_iommu=on", "--fingerprint", plan["fingerprint"])

    assert (root / "etc/kernel/cmdline").read_text() == "root=ZFS=rpool/ROOT/pve-1 boot=zfs amd_iommu=on\n"
    assert commands_run(root) == [["proxmox-boot-tool", "refresh"]]
    assert_one_audit_outcome_per_job()


def test_a_host_with_no_boot_loader_refuses_the_cmdline_and_says_why(tmp_path, settings, capsys):
    host_tree(x570(files={"etc/os-release": DEBIAN}), tmp_path / "bare", settings)
    assert fails("cmdline", "--add", "intel_iommu=on", "--plan") == 1
    assert "no GRUB, systemd-boot" in Job.objects.get().message
    assert_one_audit_outcome_per_job()


# Every verb, as JSON -------------------------------------------------------------------------
def test_every_verb_prints_its_job_and_result_as_json(tmp_path, settings, capsys):
    # The GTX 1080 Ti lists only bus; the kernel bus-resets it only when it is alone on its bus,
    # so here its HDMI audio function is not exposed (beside it, the reset is refused).
    spec = x570(files=debian_files())
    spec.functions = [function for function in spec.functions if function.address != AUDIO]
    host_tree(spec, tmp_path / "debian", settings)
    runs = [
        ("bind", GPU),
        ("reset", GPU),
        ("restore", GPU),
        ("persist", GPU, "--plan"),
        ("persist", GPU),
        ("unpersist", GPU, "--plan"),
        ("unpersist", GPU),
        ("cmdline", "--add", "video=efifb:off", "--plan"),
        ("cmdline", "--add", "video=efifb:off"),
    ]
    for args in runs:
        data = device(capsys, *args)
        job = Job.objects.latest("id")
        assert data["job"]["id"] == job.pk and data["job"]["action"] == job.action, args
        assert data["job"]["state"] == "succeeded" and data["result"] == job.result and data["result"], args
    assert KernelDouble(settings.PASSTHROUGH_ROOT).state.resets == [{"address": GPU, "method": "bus"}]
    data = device(capsys, "undo", str(Job.objects.get(action="set_kernel_cmdline").pk))
    assert data["job"]["id"] == Job.objects.latest("id").pk and data["result"]["outcome"] == "succeeded"

    with pytest.raises(SystemExit):
        call_command("device", "sriov", GPU, "4", "--format", "json")
    refused = json.loads(capsys.readouterr().out)
    assert refused["job"]["state"] == "failed" and "result" in refused
    assert_one_audit_outcome_per_job()


# Bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("persist", "0b:00"), "is not a PCI address"),
        (("persist", GPU, "0b:00.9x"), "is not a PCI address"),
        (("unpersist", "gpu"), "is not a PCI address"),
        (("persist", GPU, "--native-driver", "nouveau"), "write it as ADDR=DRIVER"),
        (("persist", GPU, "--native-driver", f"{GPU}=rm -rf"), "is not a kernel driver name"),
        (("persist", GPU, "--plan", "--fingerprint", "0123456789abcdef"), "give one of them"),
        (("persist", GPU, "--fingerprint", "latest"), "is not a plan's fingerprint"),
        (("cmdline", "--plan"), "Give at least one kernel parameter"),
        (("cmdline", "--add", "quiet splash"), "is not a kernel parameter to add"),
        (("cmdline", "--add", "a=b;reboot"), "would break the boot-loader file"),
        (("cmdline", "--remove", "=on"), "is not a kernel parameter to remove"),
        (("undo", "4242"), "There is no job 4242 on shellhost."),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(debian, args, said):
    before = tree_digest(debian)
    with pytest.raises(CommandError) as refused:
        call_command("device", *args)
    assert refused.value.returncode == 2
    assert said in str(refused.value) and "\n" not in str(refused.value)
    assert not Job.objects.exists() and not AuditEvent.objects.exists()
    assert tree_digest(debian) == before


def test_undo_takes_only_a_file_change_not_yet_undone(debian, capsys):
    call_command("device", "persist", GPU, "--plan")
    plan = Job.objects.get()
    call_command("device", "persist", GPU)
    persist = Job.objects.get(action="persist_binding")
    call_command("device", "undo", str(persist.pk))
    jobs, events = Job.objects.count(), AuditEvent.objects.count()

    with pytest.raises(CommandError, match=f"Job {plan.pk} \\(show the file changes, succeeded\\) left no file") as e:
        call_command("device", "undo", str(plan.pk))
    assert e.value.returncode == 2
    undo = Job.objects.get(action="undo_change")
    with pytest.raises(CommandError, match=f"Job {persist.pk} was already undone by job {undo.pk}."):
        call_command("device", "undo", str(persist.pk))
    assert (Job.objects.count(), AuditEvent.objects.count()) == (jobs, events)
