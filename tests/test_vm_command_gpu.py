"""`manage.py vm attach --primary-gpu --rom-file`, and the two options in the vm_attach message.

The command runs the job the page submits, through the same runner: on a kernel-double
X570 node with Proxmox VE configs (the qm double answers ``qm``), and on the same tree read
by a real libvirtd (tests/libvirtd_support.py: root and libvirt-python, else skipped).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command

from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from tests.kernelhosts import x570
from tests.libvirtd_support import connection_fixture, domains_fixture, libvirt_uri_fixture  # noqa: F401
from tests.proxmox_support import conf_text
from webui.audit.models import AuditEvent
from webui.hosts.snapshots import take_snapshot, this_host
from webui.jobs.messages import ArgumentRefused, task_arguments, validate_arguments
from webui.jobs.models import Job, State

pytestmark = pytest.mark.django_db(transaction=True)
GPU, AUDIO = "0000:0b:00.0", "0000:0b:00.1"
ROM = "/usr/share/vgabios/gtx1080ti.rom"


def gpu_node(tmp_path: Path, settings, **more: str) -> Path:
    files = {"etc/hostname": "pve\n", "etc/shadow": "root:x:19000:0:99999:7:::\n",
             "etc/pve/qemu-server/101.conf": conf_text("q35-win10-hostpci.conf")}  # fmt: skip
    root = Path(write_tree(x570(files=files), tmp_path / "pve"))
    (root / "usr/share/vgabios").mkdir(parents=True)
    (root / ROM.lstrip("/")).write_bytes(b"\x55\xaa" + bytes(64 * 1024 - 2))
    settings.PASSTHROUGH_ROOT = str(root)
    settings.PASSTHROUGH_KERNEL = "double"
    settings.PASSTHROUGH_HOSTNAME = "pve"
    for name, value in more.items():
        setattr(settings, name, value)
    take_snapshot(this_host(), KernelDouble(root), "startup")
    return root


@pytest.fixture
def node(tmp_path, settings) -> Path:
    return gpu_node(tmp_path, settings)


def conf(root: Path) -> str:
    return (root / "etc/pve/qemu-server/101.conf").read_text()


def message(job: Job, **changed: object) -> dict[str, object]:
    return {**task_arguments(job), **changed}


def test_the_command_gives_proxmox_the_gpu_as_primary_with_its_rom(node, capsys):
    call_command("vm", "attach", "101", "0b:00.0", "--primary-gpu", "--rom-file", ROM)
    out = capsys.readouterr().out
    assert "+hostpci2: 0b:00,pcie=1,x-vga=1,romfile=gtx1080ti.rom" in out
    assert "hostpci2: 0b:00,pcie=1,x-vga=1,romfile=gtx1080ti.rom" in conf(node).splitlines()
    job = Job.objects.get(action="vm_attach")
    assert job.state == State.SUCCEEDED
    assert (job.parameters["primary_gpu"], job.parameters["rom_file"]) == (True, ROM)
    assert AuditEvent.objects.get(job_id=job.pk).parameters["rom_file"] == ROM
    # qemu-server reads /usr/share/kvm only, and the ROM is not there yet: the job says so.
    assert "copy /usr/share/vgabios/gtx1080ti.rom to it before the VM starts" in job.message + out


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/etc/shadow", "ROM file /etc/shadow is not in a directory the hypervisors read ROMs from"),
        ("/usr/share/vgabios/../../../etc/shadow", "goes up a directory ('..')"),
        ("/usr/share/vgabios/nothing.rom", "ROM file /usr/share/vgabios/nothing.rom does not exist on "),
    ],
)
def test_the_command_refuses_a_rom_outside_the_rom_directories_as_a_failed_audited_job(node, capsys, path, words):
    before = conf(node)
    with pytest.raises(SystemExit) as exited:
        call_command("vm", "attach", "101", "0b:00.0", "--rom-file", path)
    assert exited.value.code == 1
    assert words in capsys.readouterr().out
    job = Job.objects.get(action="vm_attach")
    assert job.state == State.FAILED and words in job.message
    assert AuditEvent.objects.get(job_id=job.pk).result == "refused"
    assert conf(node) == before


def test_without_the_options_the_job_carries_their_defaults(node, capsys):
    call_command("vm", "attach", "101", "0b:00.0", "--config-only")
    job = Job.objects.get(action="vm_attach")
    assert (job.parameters["primary_gpu"], job.parameters["rom_file"]) == (False, None)
    assert "hostpci2: 0b:00,pcie=1" in conf(node).splitlines()


# The message ------------------------------------------------------------------------------
def test_the_vm_attach_message_carries_both_options_and_refuses_them_of_the_wrong_type(node, capsys):
    call_command("vm", "attach", "101", "0b:00.0", "--primary-gpu", "--rom-file", ROM)
    job = Job.objects.get(action="vm_attach")
    sent = task_arguments(job)
    assert (sent["primary_gpu"], sent["rom_file"]) == (True, ROM)
    assert validate_arguments("vm_attach", (), sent)["rom_file"] == ROM
    refused = {
        "primary_gpu": ("yes", 1, None),
        "rom_file": (7, "", "/" + "a" * 200, ["/usr/share/vgabios/a.rom"], True),
    }
    for name, values in refused.items():
        for value in values:
            with pytest.raises(ArgumentRefused, match=f"^{name} must be"):
                validate_arguments("vm_attach", (), message(job, **{name: value}))
    assert validate_arguments("vm_attach", (), message(job, rom_file=None))["rom_file"] is None
    without = {key: value for key, value in sent.items() if key not in ("primary_gpu", "rom_file")}
    with pytest.raises(ArgumentRefused, match="missing argument"):
        validate_arguments("vm_attach", (), without)


def test_a_job_saved_without_the_options_sends_their_defaults(node):
    job = Job.objects.create(host=this_host(), action="vm_attach", targets=[GPU], actor="shell:root",
                             parameters={"vm": "101", "live": None, "confirm": None, "fingerprint": None})  # fmt: skip
    sent = task_arguments(job)
    assert (sent["primary_gpu"], sent["rom_file"]) == (False, None)
    validate_arguments("vm_attach", (), sent)


# A real libvirtd ---------------------------------------------------------------------------
def test_the_command_writes_the_rom_element_into_a_real_libvirt_domain(tmp_path, settings, capsys, domains):
    import libvirt as lv

    from tests.libvirtd_support import URI

    domain = domains.define("rom")
    gpu_node(tmp_path, settings, PASSTHROUGH_LIBVIRT_URI=URI)
    call_command("vm", "attach", f"libvirt:{domain.name()}", "0b:00.0", "--primary-gpu", "--rom-file", ROM)
    out = capsys.readouterr().out
    assert f"+      <rom file='{ROM}'/>" in out
    job = Job.objects.get(action="vm_attach")
    assert job.state == State.SUCCEEDED, job.message
    saved = domain.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE)
    assert saved.count(f"<rom file='{ROM}'/>") == 1
    assert job.result["plan"]["after"] == saved  # what the diff showed is what libvirt keeps
