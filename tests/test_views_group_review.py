"""Passing a group through from the devices page goes through a review first, as in the wizard's step 3.

The groups page links each group to its review page (a GET: nothing happens yet); the
review says what moves to vfio-pci, what could go wrong on this host, what the tool could
not check, and how to undo it; only its form posts the bind job.
"""

from __future__ import annotations

import re

from django.urls import reverse

from tests.web_support import DUO_GPU, DUO_GPU_GROUP, DUO_NVME, DUO_NVME_GROUP  # noqa: E402
from webui.jobs.models import Job

DUO_I211 = "0000:03:00.0"  # on igb; the duo capture has no route table
DUO_I211_GROUP = 12
GROUPS = reverse("groups", kwargs={"host": "duo"})


def review_url(group: int, host: str = "duo") -> str:
    return reverse("review_group", kwargs={"host": host, "group": group})


def bind_url(group: int) -> str:
    return reverse("bind_group", kwargs={"host": "duo", "group": group})


def group_html(html: str, group: int) -> str:
    start = html.index(f'id="group-{group}"')
    end = html.find("</tbody>", start)
    return html[start:end]


def test_the_groups_page_links_each_passable_group_to_its_review_and_posts_nothing_itself(duo, operator_client):
    html = operator_client.get(GROUPS).content.decode()
    assert f'href="{review_url(DUO_I211_GROUP)}"' in group_html(html, DUO_I211_GROUP)
    assert f'href="{review_url(DUO_NVME_GROUP)}"' in group_html(html, DUO_NVME_GROUP)
    assert "/bind/" not in html  # no button on the list posts a bind


def test_the_groups_pages_buttons_are_quiet_and_none_is_primary(duo, operator_client):
    html = operator_client.get(GROUPS).content.decode()
    listing = html[html.index('<div id="group-list">') :]
    assert 'class="primary"' not in listing and "button primary" not in listing


def test_the_review_of_a_nic_says_what_moves_what_could_go_wrong_and_what_could_not_be_checked(duo, operator_client):
    response = operator_client.get(review_url(DUO_I211_GROUP))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<code>03:00.0</code>" in html and "<code>igb</code>" in html  # what moves, its driver now
    assert "is on igb now: whatever on the host uses it stops" in html  # the risk for this device
    assert "no route table was read" in html
    assert "the NIC carrying your SSH session cannot be told apart" in html
    assert "Give it back at any time" in html  # how to undo it
    form = re.search(
        rf'<form method="post" action="{re.escape(bind_url(DUO_I211_GROUP))}"[^>]*>(.*?)</form>', html, re.S
    )
    assert form and 'class="primary"' in form.group(1)
    assert not Job.objects.exists()  # looking is not doing


def test_the_review_of_a_host_critical_group_asks_for_its_phrase(duo, operator_client):
    html = operator_client.get(review_url(DUO_NVME_GROUP)).content.decode()
    assert "the root filesystem" in html
    assert f"type <code>{DUO_NVME}</code>" in html and '<input name="confirm"' in html


def test_the_review_form_posts_the_bind_job(duo, operator_client, test_broker):
    html = operator_client.get(review_url(DUO_GPU_GROUP)).content.decode()
    assert f'action="{bind_url(DUO_GPU_GROUP)}"' in html
    response = operator_client.post(bind_url(DUO_GPU_GROUP))
    job = Job.objects.get()
    assert response["Location"] == reverse("job", kwargs={"pk": job.pk})
    assert (job.action, job.targets) == ("bind_vfio", [DUO_GPU])


def test_viewers_read_the_review_without_a_form(duo, viewer_client):
    html = viewer_client.get(review_url(DUO_GPU_GROUP)).content.decode()
    assert "What could go wrong on this host" in html
    assert "viewers cannot run jobs" in html.lower()
    assert f'action="{bind_url(DUO_GPU_GROUP)}"' not in html


def test_a_group_that_cannot_go_is_reviewed_without_a_form_and_says_why(duo, operator_client):
    html = operator_client.get(review_url(10)).content.decode()
    assert "the host cannot run without it" in html
    assert f'action="{bind_url(10)}"' not in html


def test_an_unknown_group_has_no_review(duo, viewer_client):
    assert viewer_client.get(review_url(99)).status_code == 404


def test_the_risk_of_leaving_a_host_driver_names_what_stops_for_that_kind_of_device(duo, operator_client):
    nic = operator_client.get(review_url(DUO_I211_GROUP)).content.decode()
    assert "every connection through it, an SSH session included" in nic
    assert "a desktop" not in nic and "mounts on a disk controller" not in nic
    nvme = operator_client.get(review_url(DUO_NVME_GROUP)).content.decode()
    assert "every filesystem mounted from a disk on it" in nvme and "connections" not in nvme
