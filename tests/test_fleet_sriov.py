"""The same VF count on one NIC model on every host where it fits: one set_sriov_vfs job per physical function.

Three hosts have the same Intel I350 (8086:1521, 7 VFs at most): on pve1 and pve2 it is a
spare port, on pve3 it carries the default route (host-critical). pve4 has another model.
"""

from __future__ import annotations

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from tests.web_support import snapshot_host
from webui.hosts.models import Host
from webui.jobs.models import Job, State

I350 = "8086:1521"
PF = "0000:03:00.0"


def nic_host(*, management: bool = False, vendor: str = "8086", device: str = "1521", numvfs: int = 0) -> HostSpec:
    return HostSpec(
        functions=[
            FunctionSpec(PF, vendor, device, "020000", "01", driver="igb", iommu_group=12, sriov_totalvfs=7, sriov_numvfs=numvfs),
        ],
        net_devices={"eno1": PF},
        default_route="eno1" if management else None,
        modules=("kvm_intel", "kvm", "vfio", "vfio_pci", "vfio_iommu_type1"),
    )  # fmt: skip


@pytest.fixture
def nics(db, tmp_path, settings):
    settings.PASSTHROUGH_OFFLINE_AFTER = 90
    snapshot_host("pve1", nic_host(), tmp_path / "pve1")
    snapshot_host("pve2", nic_host(numvfs=4), tmp_path / "pve2")
    snapshot_host("pve3", nic_host(management=True), tmp_path / "pve3")
    snapshot_host("pve4", nic_host(vendor="15b3", device="1015"), tmp_path / "pve4")
    return {host.name: host for host in Host.objects.all()}


def _targets(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('name="target" value="')[1:]]


def test_the_models_are_listed_with_how_many_hosts_have_each(nics, viewer_client):
    html = viewer_client.get(reverse("fleet_sriov")).content.decode()
    assert f'<option value="{I350}"' in html and "(8086:1521) · 3 functions on 3 hosts" in html
    assert '<option value="15b3:1015"' in html and "1 function on 1 host" in html
    assert html.index(I350) < html.index("15b3:1015"), "the most widespread model first"


def test_each_host_with_the_model_is_shown_with_where_the_count_fits_and_why_not(nics, operator_client):
    html = operator_client.get(reverse("fleet_sriov"), {"model": I350, "count": "4"}).content.decode()
    assert _targets(html) == [f"pve1|{PF}"]
    rows = html[html.index("<tbody>") : html.index("</tbody>")]
    assert "already has 4" in rows  # pve2
    assert "host-critical" in rows and "change it on its own device page" in rows  # pve3, the management NIC
    assert "pve4" not in rows
    assert "Set 4 virtual functions on the ticked functions" in html


def test_a_count_above_a_cards_maximum_fits_nowhere(nics, operator_client):
    html = operator_client.get(reverse("fleet_sriov"), {"model": I350, "count": "8"}).content.decode()
    assert _targets(html) == [] and html.count("at most 7 virtual functions on this one") == 3
    assert "It fits no function as it is: nothing to do." in html


def test_applying_sends_one_job_per_function_to_its_own_host(nics, operator_client, test_broker):
    nics_pve2 = nics["pve2"]
    response = operator_client.post(
        reverse("fleet_sriov_apply"), {"model": I350, "count": "2", "target": [f"pve1|{PF}", f"pve2|{PF}"]}
    )
    jobs = list(Job.objects.order_by("id"))
    assert [(job.host.name, job.action, job.targets, job.parameters) for job in jobs] == [
        ("pve1", "set_sriov_vfs", [PF], {"count": 2, "confirm": None}),
        ("pve2", "set_sriov_vfs", [PF], {"count": 2, "confirm": None}),
    ]
    assert all(job.state == State.QUEUED for job in jobs) and jobs[1].host == nics_pve2
    assert response["Location"] == f"{reverse('jobs')}?action=set_sriov_vfs"
    html = operator_client.get(response["Location"]).content.decode()
    assert (
        f"Asked for 2 virtual functions on 2 function(s): job {jobs[0].pk} on pve1, job {jobs[1].pk} on pve2." in html
    )


def test_a_ticked_function_that_does_not_fit_is_refused_by_name_and_the_rest_go(nics, operator_client, test_broker):
    response = operator_client.post(
        reverse("fleet_sriov_apply"),
        {"model": I350, "count": "3", "target": [f"pve1|{PF}", f"pve3|{PF}", "pve4|0000:03:00.0", "nohost|x"]},
    )
    assert [job.host.name for job in Job.objects.all()] == ["pve1"]
    html = operator_client.get(response["Location"]).content.decode()
    assert f"pve3 {PF} was left as it is: host-critical" in html
    assert "pve4 0000:03:00.0 was left as it is: it is not a physical function of this model" in html
    assert "nohost x was left as it is" in html


def test_an_offline_host_is_said_and_its_job_waits(nics, operator_client, test_broker):
    Host.objects.filter(name="pve1").update(last_seen=timezone.now() - datetime.timedelta(minutes=5))
    html = operator_client.get(reverse("fleet_sriov"), {"model": I350, "count": "1"}).content.decode()
    assert "pve1 has not been seen for 5 minutes: the job waits for it until it expires" in html
    operator_client.post(reverse("fleet_sriov_apply"), {"model": I350, "count": "1", "target": [f"pve1|{PF}"]})
    job = Job.objects.get()
    assert job.message == "pve1 has not been seen for 5 minutes; the job waits for it until it expires."


def test_nothing_ticked_or_no_count_changes_nothing(nics, operator_client):
    for data in ({"model": I350, "count": "2"}, {"model": I350, "count": "x", "target": [f"pve1|{PF}"]}, {}):
        response = operator_client.post(reverse("fleet_sriov_apply"), data)
        assert response.status_code == 302 and response["Location"].startswith(reverse("fleet_sriov"))
    assert not Job.objects.exists()
