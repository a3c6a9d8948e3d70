"""'Pin to NUMA node' on the VM config page and the wizard's configuration step.

The multi-node host is hwloc's capture of a real two-socket Xeon server (a Xeon Phi 83:00.0 on
node 1, CPUs 8-15; node 0 has CPUs 0-7), snapshotted the way a worker does; the one-node host
is the asokolsky "duo" of the other page tests.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from passthrough.host import HostTree
from tests.test_configgen_numa_pin import PIN_WORDS
from tests.test_placement import XEON_PHI, hwloc_host, needs_hwloc
from tests.test_views_vmconfig import config_text, query
from tests.web_support import DUO_GPU
from webui.hosts.models import Host, Snapshot
from webui.hosts.snapshots import take_snapshot
from webui.wizard.models import WizardState

PHI = "0000:83:00.0"
SELECT = re.compile(r'<select name="numa_pin"[^>]*>(.*?)</select>', re.S)


def xeon_host() -> Host:
    """The two-node server as a host with a snapshot, taken as a worker takes one."""
    root = hwloc_host(XEON_PHI)
    host = Host.objects.create(name="xeon", root=str(root))
    take_snapshot(host, HostTree(str(root)), Snapshot.Source.STARTUP)
    return host


@pytest.fixture
def xeon(db) -> Host:
    return xeon_host()


def vmconfig(client, host: str = "xeon", **changes):
    return client.get(reverse("vmconfig", kwargs={"host": host}), query_for(**changes))


def query_for(**changes) -> dict[str, str]:
    return query(**{"devices": PHI, "name": "passthrough-vm", **changes})


def options(html: str) -> list[tuple[str, str]]:
    (select,) = SELECT.findall(html)
    return re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select)


def at_step_5(user, host: Host, device: str) -> None:
    WizardState.objects.create(user=user, host=host, step=5, reached=5, device=device)


def wizard_config(client, host: str = "xeon", **query) -> str:
    return client.get(reverse("wizard_step", kwargs={"host": host, "step": 5}), query).content.decode()


# -- the VM config page --------------------------------------------------------------------------------


@needs_hwloc
def test_a_multi_node_host_offers_automatic_off_and_each_node_with_its_cpus(xeon, viewer_client):
    html = vmconfig(viewer_client).content.decode()
    assert options(html) == [
        ("auto", "automatic (the passed devices&#x27; node)"),
        ("off", "off"),
        ("0", "node 0 (CPUs 0-7)"),
        ("1", "node 1 (CPUs 8-15)"),
    ]
    field = re.search(
        r'<div class="field" data-targets="([^"]*)">\s*<label for="id_numa_pin">Pin to NUMA node</label>', html
    )
    assert field and field.group(1) == "qemu libvirt proxmox"  # hidden for VMware and Hyper-V


def test_a_one_node_host_shows_no_select(duo, viewer_client):
    html = vmconfig(viewer_client, host="duo", devices=DUO_GPU).content.decode()
    assert 'id="config-text"' in html and "numa_pin" not in html and "NUMA node" not in html


@needs_hwloc
def test_the_generated_text_follows_the_choice(xeon, viewer_client):
    automatic = config_text(vmconfig(viewer_client).content.decode())
    assert "exec taskset -c 8-15 qemu-system-x86_64" in automatic
    off = config_text(vmconfig(viewer_client, numa_pin="off").content.decode())
    assert not [word for word in PIN_WORDS if word in off]
    node0 = vmconfig(viewer_client, numa_pin="0").content.decode()
    assert "exec taskset -c 0-7 qemu-system-x86_64" in config_text(node0)
    assert "host-nodes=0,policy=preferred" in config_text(node0)
    assert re.search(r'<option value="0" selected>node 0 \(CPUs 0-7\)</option>', node0)
    warning = re.search(r'<div class="verdict verdict-warn numa-warning" role="note">(.*?)</div>', node0, re.S)
    assert warning and "Pinned to NUMA node 0 as asked." in warning.group(1)
    assert "Not the devices&#x27; node: 83:00.0 on node 1." in warning.group(1)
    assert "numa-warning" not in vmconfig(viewer_client, numa_pin="1").content.decode()
    libvirt = config_text(vmconfig(viewer_client, numa_pin="1", target="libvirt").content.decode())
    assert '<vcpupin vcpu="0" cpuset="8-15" />' in libvirt


@needs_hwloc
def test_the_download_keeps_the_choice(xeon, viewer_client):
    download = reverse("vmconfig_download", kwargs={"host": "xeon"})
    html = vmconfig(viewer_client, numa_pin="0", target="proxmox").content.decode()
    link = re.search(rf'href="({re.escape(download)}\?[^"]*)"', html).group(1).replace("&amp;", "&")
    assert "numa_pin=0" in link
    text = viewer_client.get(link).content.decode()
    assert "affinity: 0-7" in text.splitlines() and "# NUMA WARNING: pinned to node 0 as asked." in text


@needs_hwloc
def test_a_node_the_host_lacks_is_refused_at_the_field_and_by_the_download(xeon, viewer_client):
    html = vmconfig(viewer_client, numa_pin="7").content.decode()
    assert 'id="config-text"' not in html
    assert "7 is not a NUMA node of this host: choose automatic, off, or a node listed." in html
    response = viewer_client.get(reverse("vmconfig_download", kwargs={"host": "xeon"}), query_for(numa_pin="7"))
    assert response.status_code == 400 and b"7 is not a NUMA node of this host" in response.content


# -- the wizard's configuration step -------------------------------------------------------------------


@needs_hwloc
def test_step_5_on_a_multi_node_host_has_the_select_and_its_text_follows_it(xeon, viewer, viewer_client):
    at_step_5(viewer, xeon, PHI)
    html = wizard_config(viewer_client, target="qemu")
    assert [value for value, _ in options(html)] == ["auto", "off", "0", "1"]
    form = re.search(r'<form method="get" action="([^"]*)" class="filters numa-pin"', html)
    assert form and form.group(1) == reverse("wizard_step", kwargs={"host": "xeon", "step": 5})
    assert '<input type="hidden" name="target" value="qemu">' in html
    assert "exec taskset -c 8-15 qemu-system-x86_64" in config_text(html)
    node0 = wizard_config(viewer_client, target="qemu", numa_pin="0")
    assert "exec taskset -c 0-7 qemu-system-x86_64" in config_text(node0) and "numa-warning" in node0
    assert "numa_pin=0" in re.search(r'<a href="([^"]*)">More options', node0).group(1)
    off = config_text(wizard_config(viewer_client, target="libvirt", numa_pin="off"))
    assert "<cputune>" not in off and "<numatune>" not in off
    assert 'class="filters numa-pin"' not in wizard_config(viewer_client, target="vmware")  # pins nothing


@needs_hwloc
def test_step_5_ignores_a_node_the_host_lacks_and_says_so_at_the_select(xeon, viewer, viewer_client):
    at_step_5(viewer, xeon, PHI)
    html = wizard_config(viewer_client, target="qemu", numa_pin="7")
    assert "exec taskset -c 8-15 qemu-system-x86_64" in config_text(html)  # automatic
    assert "7 is not a NUMA node of this host" in html


def test_step_5_on_a_one_node_host_has_no_select(duo, viewer, viewer_client):
    at_step_5(viewer, duo, DUO_GPU)
    html = wizard_config(viewer_client, host="duo", target="qemu")
    assert 'id="config-text"' in html and "exec qemu-system-x86_64" in config_text(html)
    assert "numa_pin" not in html and "NUMA node" not in html
