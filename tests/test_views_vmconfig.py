"""The VM config page: devices, target and options in, the configuration with its notes out."""

from __future__ import annotations

import html as htmllib
import re

import pytest
from django.urls import reverse

from passthrough.configgen import TARGETS, build_spec, generate
from passthrough.hosttrees import realworld
from passthrough.hosttrees.tree import write_tree
from passthrough.pci.scan import scan
from tests.web_support import DUO_CHIPSET_GROUP, DUO_GPU, DUO_NVME, snapshot_host  # noqa: E402
from webui.wizard.forms import VmConfigForm

VMCONFIG = reverse("vmconfig", kwargs={"host": "duo"})
DOWNLOAD = reverse("vmconfig_download", kwargs={"host": "duo"})


def query(**changes):
    base = {"devices": DUO_GPU, "target": "qemu", "name": "gaming", "firmware": "ovmf", "machine": "q35",
            "memory_mib": "16384", "vcpus": "8"}  # fmt: skip
    base.update(changes)
    return base


def config_text(html: str) -> str:
    """What Copy copies: the text of the <pre id="config-text">."""
    inner = re.search(r'<pre id="config-text"[^>]*>(.*?)</pre>', html, re.S).group(1)
    return htmllib.unescape(re.sub(r"<[^>]+>", "", inner))


def test_the_form_lists_devices_and_preselects_a_pick(duo, viewer_client):
    html = viewer_client.get(VMCONFIG, {"pick": DUO_GPU}).content.decode()
    assert f'value="{DUO_GPU}"' in html and 'GP108 [GeForce GT 1030] <span class="muted">(group 2)</span>' in html
    assert re.search(rf'<input type="checkbox" name="devices" value="{DUO_GPU}" id="id_devices_\d+" checked>', html)
    assert html.count(" checked>") == 1
    assert "0000:00:01.0" not in html  # a bridge is never offered


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_target_is_generated_with_the_companion_added_and_said_so(duo, viewer_client, target):
    html = viewer_client.get(VMCONFIG, query(target=target)).content.decode()
    assert "Added because they must move too:" in html
    assert "function of the same physical device as 01:00.0" in html
    assert 'id="config-text"' in html and 'data-copy="#config-text"' in html
    assert "What each option does" in html and "What the host needs" in html
    assert f"{DOWNLOAD}?" in html


def test_the_requirements_say_what_this_host_lacks_now(duo, viewer_client):
    html = viewer_client.get(VMCONFIG, query()).content.decode()
    assert "0000:01:00.0 is bound to vfio-pci." in html
    assert "not all met now" in html  # the GPU is not on vfio-pci in this snapshot


def test_the_download_is_the_same_text_as_an_attachment(duo, viewer_client):
    response = viewer_client.get(DOWNLOAD, query(target="libvirt"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/xml")
    assert response["Content-Disposition"] == 'attachment; filename="gaming.xml"'
    assert (
        b"<name>gaming</name>" in response.content
        and b"<memory unit='MiB'>16384</memory>" in response.content.replace(b'"', b"'")
    )


def test_a_configuration_that_cannot_work_is_refused_in_words(duo, viewer_client):
    html = viewer_client.get(
        VMCONFIG, query(machine="i440fx", primary_gpu="on", devices="0000:00:17.0")
    ).content.decode()
    assert "The configuration cannot be made:" in html
    assert "primary GPU" in html
    response = viewer_client.get(DOWNLOAD, query(name="no spaces allowed"))
    assert response.status_code == 400 and b"is not a usable VM name" in response.content


def test_a_device_not_on_the_host_is_a_form_error(duo, viewer_client):
    html = viewer_client.get(VMCONFIG, query(devices="0000:09:00.0")).content.decode()
    assert "Select a valid choice" in html
    assert viewer_client.get(DOWNLOAD, query(devices="0000:09:00.0")).status_code == 400


def test_making_it_with_no_device_picked_says_so_at_the_form(duo, viewer_client):
    without_devices = {key: value for key, value in query().items() if key != "devices"}
    html = viewer_client.get(VMCONFIG, without_devices).content.decode()
    assert html.count("Pick at least one device to pass through.") == 2  # at the list and by the button
    assert "Nothing was made: Pick at least one device" in html
    assert 'id="config-text"' not in html


def test_each_device_carries_its_groups_verdict_and_a_never_allowed_one_is_disabled(duo, viewer_client):
    html = viewer_client.get(VMCONFIG).content.decode()
    refused = html[html.index("Cannot go to a VM</h3>") :]
    chipset = re.search(r'<ul class="refused-group">.*?</ul>', refused, re.S).group(0)
    assert '<input type="checkbox" name="devices" value="0000:00:1f.0" disabled>' in chipset
    assert "00:1f.0 Z370 Chipset LPC/eSPI Controller" in chipset and "00:1f.4 200 Series" in chipset
    assert chipset.count("is the chipset&#x27;s LPC/ISA bridge; the host cannot run without it.") == 1
    assert f"(group {DUO_CHIPSET_GROUP})" in chipset
    offered = html[: html.index("Cannot go to a VM</h3>")]
    assert "0000:00:1f.0" not in offered
    nvme = re.search(rf'<li class="device-choice critical">(?:(?!</li>).)*value="{DUO_NVME}".*?</li>', html, re.S)
    assert nvme and "disabled" not in nvme.group(0) and ">host-critical</span>" in nvme.group(0)
    assert "05:00.0 is host-critical: the root filesystem (/dev/nvme0n1p2, ext4)" in nvme.group(0)
    gpu = re.search(rf'<li class="device-choice">(?:(?!</li>).)*value="{DUO_GPU}".*?</li>', html, re.S)
    assert gpu and "badge" not in gpu.group(0)


def test_a_host_critical_gpu_is_marked_with_why(db, viewer_client, tmp_path):
    snapshot_host("b550", realworld.mapmanagement_b550(), tmp_path / "b550")
    html = viewer_client.get(reverse("vmconfig", kwargs={"host": "b550"})).content.decode()
    gpu = re.search(r'<li class="device-choice critical">(?:(?!</li>).)*value="0000:04:00.0".*?</li>', html, re.S)
    assert gpu and "the firmware framebuffer fb0 (EFI VGA) shows the boot screen on it" in gpu.group(0)


def test_a_never_allowed_device_sent_anyway_is_refused(duo, viewer_client):
    html = viewer_client.get(VMCONFIG, query(devices="0000:00:1f.0")).content.decode()
    assert "0000:00:1f.0 cannot go to a VM: 00:1f.0 (Z370 Chipset LPC/eSPI Controller) is the chipset" in html
    assert 'id="config-text"' not in html
    assert viewer_client.get(DOWNLOAD, query(devices="0000:00:1f.0")).status_code == 400


@pytest.mark.parametrize("target", ["libvirt", "proxmox"])
def test_a_target_that_binds_at_start_does_not_call_an_unbound_device_missing(duo, viewer_client, target):
    html = viewer_client.get(VMCONFIG, query(target=target)).content.decode()
    manager = {"libvirt": "libvirt (managed=&#x27;yes&#x27;)", "proxmox": "Proxmox"}[target]
    assert f"{manager} binds 0000:01:00.0 to vfio-pci when the VM starts." in html
    assert "badge-fail" not in html and "met now" in html  # nothing is missing: the GPU has no driver to let go
    assert "rebinds" not in html


def test_qemu_still_needs_the_device_on_vfio_first(duo, viewer_client):
    html = viewer_client.get(VMCONFIG, query(target="qemu")).content.decode()
    assert "0000:01:00.0 is bound to vfio-pci." in html and ">missing</span>" in html


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_configuration_lines_come_first_and_its_opening_comment_is_apart(duo, viewer_client, target):
    html = viewer_client.get(VMCONFIG, query(target=target)).content.decode()
    text = config_text(html)
    first = {"qemu": "#!/bin/sh", "libvirt": "<domain", "proxmox": "name: gaming", "vmware": ".encoding",
             "hyperv": "#Requires -RunAsAdministrator"}[target]  # fmt: skip
    assert text.startswith(first), text[:200]
    assert "Host requirements" not in text and "Devices passed" not in text
    assert "The file's opening comment" in html and "Host requirements, read from the inventory" in html
    download = viewer_client.get(DOWNLOAD, query(target=target)).content.decode()
    assert all(line in download.splitlines() for line in text.splitlines())


def test_proxmoxs_hostpci_line_is_in_the_first_lines(duo, viewer_client):
    lines = config_text(viewer_client.get(VMCONFIG, query(target="proxmox")).content.decode()).splitlines()
    assert "hostpci0: 01:00,pcie=1" in lines[:10]


def test_backticks_in_notes_and_requirements_show_as_code(duo, viewer_client):
    html = viewer_client.get(VMCONFIG, query(target="qemu")).content.decode()
    assert "<code>ls /usr/share/OVMF</code> shows them." in html
    notes = html[html.index('class="config-notes"') :]
    assert "`" not in notes


@pytest.mark.parametrize("target", list(TARGETS))
def test_each_option_is_offered_for_exactly_the_targets_whose_text_it_changes(tmp_path, target):
    inventory = scan(write_tree(realworld.asokolsky_duo(), tmp_path / "duo"))
    changed = {
        "name": {"name": "other"}, "firmware": {"firmware": "seabios"}, "machine": {"machine": "i440fx"},
        "primary_gpu": {"primary_gpu": True}, "rom_file": {"rom_file": "/roms/gp108.rom"},
        "memory_mib": {"memory_mib": 4096}, "vcpus": {"vcpus": 2}, "hugepages": {"hugepages": True},
        "hide_kvm": {"hide_kvm": True}, "hv_vendor_id": {"hv_vendor_id": "whatever"},
    }  # fmt: skip
    assert set(changed) == set(VmConfigForm.OPTION_TARGETS)
    plain = generate(inventory, build_spec(inventory, [DUO_GPU]), target).text
    for option, options in changed.items():
        text = generate(inventory, build_spec(inventory, [DUO_GPU], **options), target).text
        assert (text != plain) == (target in VmConfigForm.OPTION_TARGETS[option]), (option, target)


def test_the_page_marks_each_option_with_the_targets_that_use_it(duo, viewer_client):
    html = viewer_client.get(VMCONFIG, query(target="vmware")).content.decode()
    hv_vendor = re.search(r'<div class="field" data-targets="([^"]*)">\s*<label for="id_hv_vendor_id">', html)
    assert hv_vendor and hv_vendor.group(1) == "qemu libvirt proxmox"
    hide = re.search(r'<div class="field field-check" data-targets="([^"]*)">\s*<input[^>]*id="id_hide_kvm"', html)
    assert hide and "hyperv" not in hide.group(1).split()
