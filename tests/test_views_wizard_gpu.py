"""Step 5's options for a GPU: "primary GPU" and a ROM file, in the preview and in the attach job.

The host is the kernel-double X570 node with Proxmox VE configs (a GTX 1080 Ti with its
audio at 0b:00), and its snapshot also lists a shut-off libvirt domain (made from a domain
XML, as the worker would read it), so the page shows both kinds' diffs. The last test runs
the chain end to end: the page's Attach, the signed job, a real worker, the qm double.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.http import QueryDict
from django.urls import reverse

from passthrough.hosttrees.tree import write_tree
from passthrough.kerneldouble import KernelDouble
from passthrough.vms import libvirt
from passthrough.vms.model import VmInventory, VmSource
from tests.kernelhosts import GTX1080TI, I211, x570
from tests.libvirtd_support import domain_xml
from tests.proxmox_support import conf_text
from tests.worker_support import operator_named, requires_redis, wait_for_job
from webui.hosts.models import Host, Snapshot
from webui.hosts.snapshots import take_snapshot
from webui.jobs.models import Job, State
from webui.wizard import snapshots
from webui.wizard.give import options_form
from webui.wizard.models import WizardState

GPU = GTX1080TI.address
ROM = "/usr/share/vgabios/gtx1080ti.rom"
PRIMARY = "Primary GPU: the VM&#x27;s only display"


def pve_tree(root: Path) -> Path:
    files = {"etc/hostname": "pve\n", "etc/shadow": "root:x:19000:0:99999:7:::\n",
             "etc/pve/qemu-server/101.conf": conf_text("q35-win10-hostpci.conf")}  # fmt: skip
    write_tree(x570(files=files), root)
    (root / "usr/share/vgabios").mkdir(parents=True)
    (root / ROM.lstrip("/")).write_bytes(b"\x55\xaa" + bytes(64 * 1024 - 2))
    (root / "usr/share/vgabios/shadow.rom").symlink_to("/etc/shadow")
    return root


@pytest.fixture
def pve(db, tmp_path) -> Host:
    root = pve_tree(tmp_path / "pve")
    host = Host.objects.create(name="pve", root=str(root))
    snapshot = take_snapshot(host, KernelDouble(root), Snapshot.Source.STARTUP)
    vms = snapshot.vm_inventory
    win11 = libvirt.vm_from_xml(domain_xml("win11"), "shut off")
    snapshot.vms = VmInventory([*vms.sources, VmSource("libvirt", True, "test", [win11])]).to_json()
    snapshot.save(update_fields=["vms"])
    return host


def at_step_5(user, host: Host, device: str = GPU) -> None:
    WizardState.objects.create(user=user, host=host, device=device, step=5, reached=5)


def step_5(client, **query: str) -> str:
    response = client.get(reverse("wizard_step", kwargs={"host": "pve", "step": 5}), query)
    assert response.status_code == 200
    return response.content.decode()


def test_a_gpu_is_offered_primary_and_a_rom_file_and_the_proxmox_diff_shows_both(pve, operator, operator_client):
    at_step_5(operator, pve)
    html = step_5(operator_client, vm="proxmox:101")
    assert PRIMARY in html and "no emulated display of its own" in html and "never hot-plugged" in html
    assert 'name="rom_file"' in html and "+hostpci2: 0b:00,pcie=1\n" in html
    html = step_5(operator_client, vm="proxmox:101", primary_gpu="on", rom_file=ROM)
    assert "+hostpci2: 0b:00,pcie=1,x-vga=1,romfile=gtx1080ti.rom" in html
    assert "qemu-server reads /usr/share/kvm/gtx1080ti.rom (only /usr/share/kvm); copy " in html
    assert '<input type="hidden" name="primary_gpu" value="on">' in html
    assert f'<input type="hidden" name="rom_file" value="{ROM}">' in html


def test_the_libvirt_diff_shows_the_rom_element_and_says_there_is_no_x_vga_line(pve, operator, operator_client):
    at_step_5(operator, pve)
    html = step_5(operator_client, vm="libvirt:win11", primary_gpu="on", rom_file=ROM)
    assert f"+      &lt;rom file=&#x27;{ROM}&#x27;/&gt;" in html
    assert "so the domain gets no x-vga line" in html
    assert "Attach to win11" in html


def test_a_rom_path_outside_the_rom_directories_is_refused_on_the_page_with_no_attach_button(
    pve, operator, operator_client
):
    at_step_5(operator, pve)
    html = step_5(operator_client, vm="proxmox:101", rom_file="/etc/shadow")
    assert "ROM file /etc/shadow is not in a directory the hypervisors read ROMs from" in html
    assert "Attach to" not in html
    html = step_5(operator_client, vm="proxmox:101", rom_file="/usr/share/vgabios/../../../etc/shadow")
    assert "goes up a directory" in html and "Attach to" not in html


def test_a_device_that_is_no_display_is_not_offered_primary_gpu(pve, operator, operator_client):
    at_step_5(operator, pve, device=I211.address)
    html = step_5(operator_client, vm="proxmox:101", primary_gpu="on")
    assert PRIMARY not in html and 'name="rom_file"' in html
    inventory = snapshots.inventory_of(snapshots.latest(pve))
    assert options_form(QueryDict("primary_gpu=on"), inventory, I211.address).options()["primary_gpu"] is False
    assert options_form(QueryDict("primary_gpu=on"), inventory, GPU).options()["primary_gpu"] is True


def test_attach_submits_the_options_the_preview_was_made_with(pve, operator, operator_client, test_broker):
    at_step_5(operator, pve)
    submit = reverse("wizard_submit", kwargs={"host": "pve", "step": 5})
    operator_client.post(submit, {"do": "attach", "vm": "proxmox:101", "primary_gpu": "on", "rom_file": ROM})
    job = Job.objects.get(action="vm_attach")
    assert job.parameters == {"vm": "proxmox:101", "live": None, "confirm": None, "fingerprint": None,
                              "primary_gpu": True, "rom_file": ROM}  # fmt: skip
    job.state = State.FAILED
    job.save(update_fields=["state"])
    response = operator_client.post(submit, {"do": "attach", "vm": "proxmox:101", "rom_file": "/etc/shadow"})
    assert Job.objects.filter(action="vm_attach").count() == 1  # nothing submitted
    html = operator_client.get(response.url).content.decode()
    assert "Nothing was attached: ROM file /etc/shadow is not in a directory the hypervisors read ROMs from" in html


@requires_redis
@pytest.mark.worker
def test_the_worker_writes_the_rom_the_page_asked_for_and_refuses_a_link_to_etc_shadow(start_worker, tmp_path):
    root = pve_tree(tmp_path / "pve")
    start_worker(root, "pve")
    host = Host.objects.get(name="pve")
    alice = operator_named("alice")
    from tests.web_support import signed_in

    page = signed_in(alice)
    at_step_5(alice, host)
    submit = reverse("wizard_submit", kwargs={"host": "pve", "step": 5})
    conf = root / "etc/pve/qemu-server/101.conf"
    before = conf.read_text()

    # The link passes the page (it is written as a path in /usr/share/vgabios); the worker follows it.
    page.post(submit, {"do": "attach", "vm": "proxmox:101", "rom_file": "/usr/share/vgabios/shadow.rom"})
    refused = wait_for_job(Job.objects.get(action="vm_attach"))
    assert refused.state == State.FAILED
    assert "ROM file /usr/share/vgabios/shadow.rom is a link to /etc/shadow" in refused.message
    assert conf.read_text() == before

    page.post(submit, {"do": "attach", "vm": "proxmox:101", "primary_gpu": "on", "rom_file": ROM})
    done = wait_for_job(Job.objects.filter(action="vm_attach").latest("id"))
    assert done.state == State.SUCCEEDED, done.message
    assert "hostpci2: 0b:00,pcie=1,x-vga=1,romfile=gtx1080ti.rom" in conf.read_text().splitlines()
