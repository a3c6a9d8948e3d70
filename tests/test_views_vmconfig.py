"""The VM config page: devices, target and options in, the configuration with its notes out."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from passthrough.configgen import TARGETS
from tests.web_support import DUO_GPU  # noqa: E402

VMCONFIG = reverse("vmconfig", kwargs={"host": "duo"})
DOWNLOAD = reverse("vmconfig_download", kwargs={"host": "duo"})


def query(**changes):
    base = {"devices": DUO_GPU, "target": "qemu", "name": "gaming", "firmware": "ovmf", "machine": "q35",
            "memory_mib": "16384", "vcpus": "8"}  # fmt: skip
    base.update(changes)
    return base


def test_the_form_lists_devices_and_preselects_a_pick(duo, viewer_client):
    html = viewer_client.get(VMCONFIG, {"pick": DUO_GPU}).content.decode()
    assert f'value="{DUO_GPU}"' in html and "GP108 [GeForce GT 1030] (group 2)" in html
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
