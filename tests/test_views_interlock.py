"""The device and groups pages show the interlock's own answer: the same words the worker would refuse with."""

from __future__ import annotations

from dataclasses import replace

import pytest
from django.urls import reverse
from django.utils.html import escape

from passthrough.hosttrees import realworld
from passthrough.ops import judge
from passthrough.ops.interlock import RESET, SET_SRIOV_VFS
from tests.kernelhosts import GT710, GT710_AUDIO, x570
from tests.web_support import DUO_NVME, DUO_NVME_GROUP, snapshot_host
from webui.jobs.models import Job
from webui.wizard import snapshots

DUO_LPC = "0000:00:1f.0"  # Z370 LPC/eSPI controller
BOOT_GPU = GT710.address
E810 = "0000:a2:00.0"


def page(client, host: str, address: str) -> str:
    return client.get(reverse("device", kwargs={"host": host, "address": address})).content.decode()


def post(client, name: str, host: str, address: str, data: dict | None = None) -> str:
    url = reverse(name, kwargs={"host": host, "address": address})
    return client.post(url, data or {}, follow=True).content.decode()


def inventory_of(host):
    return snapshots.inventory_of(snapshots.latest(host))


@pytest.fixture
def console_host(db, tmp_path):
    """The X570 with its boot GT 710 off its PCI driver but under the efifb console: the bug's host.

    Its HDMI audio function is not exposed, so the GT 710 is alone on its bus and the bus
    reset it lists can work (beside the audio function, the kernel refuses it).
    """
    spec = x570(console="efifb")
    spec.functions = [
        replace(f, driver=None) if f.address == BOOT_GPU else f
        for f in spec.functions
        if f.address != GT710_AUDIO.address
    ]
    host, _ = snapshot_host("x570", spec, tmp_path / "x570")
    return host


@pytest.fixture
def management_pf(db, tmp_path):
    """An E810 whose PF carries the host's default route."""
    spec = realworld.prometheus_e810(numvfs=2)
    spec.net_devices, spec.default_route = {"eno1": E810}, "eno1"
    host, _ = snapshot_host("mgmt", spec, tmp_path / "mgmt")
    return host


def test_the_device_page_disables_reset_with_the_interlocks_reason(duo, operator_client):
    reason = judge(inventory_of(duo), RESET, [DUO_LPC]).reason()
    assert reason is not None and "LPC/ISA bridge; the host cannot run without it" in reason

    html = page(operator_client, "duo", DUO_LPC)

    assert '<button type="button" disabled aria-describedby="reset-blocked">Reset this device</button>' in html
    assert f'<p class="muted" id="reset-blocked">{escape(reason)}</p>' in html
    assert reverse("reset_device", kwargs={"host": "duo", "address": DUO_LPC}) not in html
    refused = post(operator_client, "reset_device", "duo", DUO_LPC, {"method": "", "confirm": DUO_LPC})
    assert f"{DUO_LPC} was not reset: {escape(reason)}" in refused
    assert not Job.objects.exists()


def test_the_boot_gpu_under_the_console_asks_for_its_phrase_before_a_reset(console_host, operator_client):
    verdict = judge(inventory_of(console_host), RESET, [BOOT_GPU])
    assert verdict.confirm_phrase == BOOT_GPU

    html = page(operator_client, "x570", BOOT_GPU)

    assert f'<p class="critical-note">⚠ {escape(verdict.reason())}</p>' in html
    assert f'Type <code>{BOOT_GPU}</code> to go ahead: <input name="confirm"' in html
    for typed in ("", "yes"):
        refused = post(operator_client, "reset_device", "x570", BOOT_GPU, {"method": "", "confirm": typed})
        assert f"{BOOT_GPU} was not reset: A reset of 0c:00.0" in refused
        assert "firmware framebuffer" in refused and f"type {BOOT_GPU} as the confirmation" in refused
    assert not Job.objects.exists()


def test_the_management_nics_vf_count_asks_for_its_phrase(management_pf, operator_client):
    verdict = judge(inventory_of(management_pf), SET_SRIOV_VFS, [E810])

    html = page(operator_client, "mgmt", E810)

    assert "it carries the default route (eno1)" in verdict.reason()
    assert f'<p class="critical-note">⚠ {escape(verdict.reason())}</p>' in html
    assert f'Type <code>{E810}</code> to go ahead: <input name="confirm"' in html
    refused = post(operator_client, "set_vfs", "mgmt", E810, {"count": "4", "confirm": "0000:a2:00.1"})
    assert f"The VF count of {E810} was not changed: Changing the VF count of a2:00.0" in refused
    assert "(“0000:a2:00.1”) is not the one asked for" in refused
    assert not Job.objects.exists()


def test_viewers_see_the_interlocks_warning_without_a_form(console_host, viewer_client):
    html = page(viewer_client, "x570", BOOT_GPU)
    assert "touches host-critical functions" in html and 'name="confirm"' not in html
    assert "Operators can reset it from here." in html


def test_pass_through_of_a_host_critical_group_refuses_with_the_interlocks_words(duo, operator_client):
    url = reverse("bind_group", kwargs={"host": "duo", "group": DUO_NVME_GROUP})
    html = operator_client.post(url, {"confirm": "yes"}, follow=True).content.decode()
    assert f"IOMMU group {DUO_NVME_GROUP} was not passed through: Binding 05:00.0" in html
    assert "the root filesystem" in html and f"type {DUO_NVME} as the confirmation" in html
    assert not Job.objects.exists()
