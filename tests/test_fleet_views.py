"""The host list: every host with its worker's state, readiness and what is on vfio-pci; refresh and check them all."""

from __future__ import annotations

import datetime
import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from tests.web_support import make_user, no_iommu_host, signed_in, snapshot_host
from webui.accounts.roles import OPERATOR
from webui.hosts.models import Host
from webui.jobs.models import Job, State

PAGES = ["hosts", "fleet_readiness", "fleet_sriov"]
ACTIONS = ["refresh_hosts", "check_everywhere", "fleet_sriov_apply"]


def vfio_host() -> HostSpec:
    return HostSpec(
        functions=[
            FunctionSpec("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=2),
            FunctionSpec("0000:01:00.0", "10de", "1d01", "030000", "a1", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0"),
            FunctionSpec("0000:01:00.1", "10de", "0fb8", "040300", "a1", driver="vfio-pci", iommu_group=2, parent="0000:00:01.0"),
        ],
        modules=("kvm_intel", "kvm", "vfio", "vfio_pci", "vfio_iommu_type1"),
    )  # fmt: skip


@pytest.fixture
def fleet(db, tmp_path, settings):
    """pve1 online and ready with a GPU on vfio-pci, pve2 online without an IOMMU, pve3 offline for 12 minutes."""
    settings.PASSTHROUGH_OFFLINE_AFTER = 90
    pve1, _ = snapshot_host("pve1", vfio_host(), tmp_path / "pve1")
    pve2, _ = snapshot_host("pve2", no_iommu_host(), tmp_path / "pve2")
    pve3, _ = snapshot_host("pve3", vfio_host(), tmp_path / "pve3")
    Host.objects.filter(pk=pve1.pk).update(
        kernel="6.8.12-4-pve", cpu_vendor="GenuineIntel", iommu_enabled=True, worker_version="0.1.0+abcdef0"
    )
    Host.objects.filter(pk=pve2.pk).update(cpu_vendor="AuthenticAMD", iommu_enabled=False)
    Host.objects.filter(pk=pve3.pk).update(last_seen=timezone.now() - datetime.timedelta(minutes=12))
    return {host.name: host for host in Host.objects.all()}


def _row(html: str, host: str) -> str:
    found = re.search(rf'<tr[^>]*data-host="{host}".*?</tr>', html, re.S)
    assert found, f"no row for {host}"
    return found.group(0)


def test_the_host_list_shows_each_host_online_or_offline_with_its_facts(fleet, viewer_client):
    html = viewer_client.get(reverse("hosts")).content.decode()
    pve1, pve2, pve3 = _row(html, "pve1"), _row(html, "pve2"), _row(html, "pve3")
    assert "online" in pve1 and "6.8.12-4-pve" in pve1 and "Intel" in pve1 and "0.1.0+abcdef0" in pve1
    assert 'badge-pass">ready' in pve1 and "2 functions" in pve1
    assert "online" in pve2 and "AMD" in pve2 and ">off<" in pve2 and "1 thing to fix" in pve2
    assert 'class="offline"' in pve3 and 'badge-fail">offline' in pve3 and "not seen for 12\xa0minutes" in pve3
    assert "offline" not in pve1 and "offline" not in pve2
    assert "3 hosts: 2 ready for passthrough, 1 with something to fix" in html and "1 offline" in html


def test_the_host_list_says_which_functions_are_on_vfio_pci_where_and_in_which_vm(fleet, viewer_client):
    html = viewer_client.get(reverse("hosts")).content.decode()
    section = html[html.index("On vfio-pci, host by host") :]
    assert section.count("<code>0000:01:00.0</code>") == 2 and section.count("<code>0000:01:00.1</code>") == 2
    assert 'id="vfio-pve1"' in section and 'id="vfio-pve3"' in section and "vfio-pve2" not in section
    assert reverse("device", kwargs={"host": "pve1", "address": "0000:01:00.0"}) in section


def test_viewers_get_no_bulk_buttons_and_operators_do(fleet, viewer_client, operator_client):
    assert "Refresh every host" not in viewer_client.get(reverse("hosts")).content.decode()
    html = operator_client.get(reverse("hosts")).content.decode()
    assert "Refresh every host" in html and "Check readiness everywhere" in html


def test_a_host_that_is_offline_is_marked_in_the_switcher_and_on_its_pages(fleet, viewer_client):
    html = viewer_client.get(reverse("readiness", kwargs={"host": "pve1"})).content.decode()
    switcher = html[html.index('class="switcher"') : html.index("</details>")]
    assert re.search(r">pve3 <span class=\"badge badge-fail\">offline</span></a>", switcher)
    assert not re.search(r">pve1 <span class=\"badge badge-fail\">", switcher)
    assert "Every host (1 offline)" in switcher
    line = viewer_client.get(reverse("readiness", kwargs={"host": "pve3"})).content.decode()
    line = line[line.index('class="snapshot-line"') :].split("</p>")[0]
    assert "pve3 has not been seen for 12 minutes" in line and "jobs for it wait until it is back" in line
    assert "has not been seen" not in html[html.index('class="snapshot-line"') :].split("</p>")[0]


def test_refresh_every_host_scans_each_online_host_and_names_the_offline_ones(fleet, operator_client, test_broker):
    response = operator_client.post(reverse("refresh_hosts"))
    jobs = list(Job.objects.order_by("id"))
    assert [(job.host.name, job.action, job.state) for job in jobs] == [
        ("pve1", "scan", State.QUEUED),
        ("pve2", "scan", State.QUEUED),
    ]
    assert response["Location"] == f"{reverse('hosts')}?scans={jobs[0].pk},{jobs[1].pk}"
    html = operator_client.get(response["Location"]).content.decode()
    assert "Asked 2 hosts for a fresh scan: pve1, pve2." in html
    assert "Not asked: pve3 has not been seen for 12 minutes." in html
    assert "Scanning: 0 of 2 done." in html and 'hx-trigger="every 1s"' in html
    assert 'http-equiv="refresh"' in html  # without JavaScript the page reloads itself
    assert "not asked" in _row(html, "pve3")


def test_the_followed_scans_are_polled_until_all_have_ended_then_286(fleet, operator_client, test_broker):
    location = operator_client.post(reverse("refresh_hosts"))["Location"]
    live = operator_client.get(location, HTTP_HX_REQUEST="true")
    assert live.status_code == 200 and b"<html" not in live.content and b"Scanning: 0 of 2 done." in live.content
    Job.objects.update(state=State.SUCCEEDED, finished=timezone.now())
    done = operator_client.get(location, HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and b"All 2 scans ended" in done.content
    assert b'hx-trigger="every 1s"' not in operator_client.get(location).content


def test_check_readiness_everywhere_leads_to_the_table_of_checks(fleet, operator_client, test_broker):
    response = operator_client.post(reverse("check_everywhere"))
    assert response["Location"].startswith(reverse("fleet_readiness") + "?scans=")
    html = operator_client.get(response["Location"]).content.decode()
    assert "Checking: 0 of 2 done." in html
    pve2 = _row(html, "pve2")
    assert 'badge-fail">fail' in pve2 and f"{reverse('readiness', kwargs={'host': 'pve2'})}#check-iommu" in pve2
    assert 'badge-pass">ready' in _row(html, "pve1") and "offline" in _row(html, "pve3")
    assert "IOMMU present and enabled" in html  # a column per check, titled


def test_a_followed_id_that_is_not_a_scan_is_ignored(fleet, operator_client):
    other = Job.objects.create(host=fleet["pve1"], actor="x", action="bind_vfio", targets=["0000:01:00.0"])
    html = operator_client.get(f"{reverse('hosts')}?scans={other.pk},abc,99999").content.decode()
    assert "Scanning" not in html and "hx-trigger" not in html


def test_no_hosts_no_buttons_and_a_pointer_to_adding_one(db, operator_client):
    html = operator_client.get(reverse("hosts")).content.decode()
    assert "No host has reported yet" in html and "Adding a host" in html and "Refresh every host" not in html


@pytest.mark.parametrize("name", PAGES)
def test_pages_need_sign_in_and_refuse_post(fleet, viewer_client, name):
    response = Client().get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:sign_in"))
    assert viewer_client.get(reverse(name)).status_code == 200
    assert viewer_client.post(reverse(name)).status_code == 405


@pytest.mark.parametrize("name", ACTIONS)
def test_actions_need_an_operator_a_post_and_the_csrf_token(fleet, viewer_client, name):
    assert Client().post(reverse(name)).status_code == 302
    refused = viewer_client.post(reverse(name))
    assert refused.status_code == 403 and b"operator" in refused.content
    operator = make_user("oona", OPERATOR)
    assert signed_in(operator).get(reverse(name)).status_code == 405
    assert signed_in(operator, enforce_csrf_checks=True).post(reverse(name)).status_code == 403
    assert not Job.objects.exists()


def test_home_opens_the_host_list_until_a_host_has_been_looked_at(fleet, viewer_client):
    assert viewer_client.get(reverse("home"))["Location"] == reverse("hosts")
    viewer_client.get(reverse("readiness", kwargs={"host": "pve2"}))
    assert viewer_client.get(reverse("home"))["Location"] == reverse("host_home", kwargs={"host": "pve2"})
