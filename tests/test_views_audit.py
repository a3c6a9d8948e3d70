"""The audit log page: filters, the chain's verification on top, CSV and JSON exports of the filtered set."""

from __future__ import annotations

import csv
import datetime
import io
import json

import pytest
from django.urls import reverse
from django.utils import timezone

from webui.audit.models import AuditEvent, record

AUDIT = reverse("audit")


@pytest.fixture
def events(db):
    record(
        actor="otto",
        source="web",
        host="duo",
        action="bind_vfio",
        targets=["0000:01:00.0"],
        result="requested",
        job_id=1,
    )
    record(actor="otto", source="worker", host="duo", action="bind_vfio", targets=["0000:01:00.0", "0000:01:00.1"],
           result="succeeded", job_id=1, state_before={"0000:01:00.0": "nouveau"})  # fmt: skip
    record(actor="vera", source="web", host="pve1", action="scan", result="requested", job_id=2)
    record(actor="worker", source="worker", host="pve1", action="reset", targets=["0000:03:00.0"], result="failed",
           error="FLR timed out", job_id=3)  # fmt: skip
    return list(AuditEvent.objects.order_by("id"))


def ids_on_page(html: str) -> list[int]:
    import re

    return [int(number) for number in re.findall(r"<tr>\s*<td>(\d+)</td>", html)]


def test_the_log_shows_every_event_newest_first_with_an_intact_chain(events, viewer_client):
    html = viewer_client.get(AUDIT).content.decode()
    assert ids_on_page(html) == [event.id for event in reversed(events)]
    assert "The chain is intact." in html and "4 events checked" in html
    assert "FLR timed out" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"host": "pve1"}, [2, 3]),
        ({"user": "otto"}, [0, 1]),
        ({"action": "bind_vfio"}, [0, 1]),
        ({"result": "failed"}, [3]),
        ({"device": "0000:01:00.1"}, [1]),
        ({"device": "01:00.0"}, [0, 1]),  # the short form matches too
        ({"host": "duo", "result": "succeeded"}, [1]),
    ],
)
def test_filters(events, viewer_client, query, expected):
    html = viewer_client.get(AUDIT, query).content.decode()
    assert sorted(ids_on_page(html)) == [events[index].id for index in expected]


def test_the_date_range_filter(events, viewer_client):
    AuditEvent.objects.filter(pk=events[0].pk).update(created=timezone.now() - datetime.timedelta(days=10))
    today = timezone.localdate().isoformat()
    html = viewer_client.get(AUDIT, {"since": today, "until": today}).content.decode()
    assert sorted(ids_on_page(html)) == [event.id for event in events[1:]]
    old = (timezone.localdate() - datetime.timedelta(days=10)).isoformat()
    assert ids_on_page(viewer_client.get(AUDIT, {"until": old}).content.decode()) == [events[0].id]


def test_a_reversed_date_range_is_said_in_words(events, viewer_client):
    html = viewer_client.get(AUDIT, {"since": "2025-02-01", "until": "2025-01-01"}).content.decode()
    assert "The start date is after the end date." in html


def test_the_csv_export_holds_the_filtered_events_oldest_first(events, viewer_client):
    response = viewer_client.get(reverse("audit_export", kwargs={"fmt": "csv"}), {"host": "duo"})
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [int(row["id"]) for row in rows] == [events[0].id, events[1].id]
    assert json.loads(rows[1]["targets"]) == ["0000:01:00.0", "0000:01:00.1"]
    assert json.loads(rows[1]["state_before"]) == {"0000:01:00.0": "nouveau"}
    assert rows[1]["hash"] == events[1].hash and rows[1]["prev_hash"] == events[0].hash


def test_the_json_export_holds_the_filtered_events_and_the_chain_state(events, viewer_client):
    response = viewer_client.get(reverse("audit_export", kwargs={"fmt": "json"}), {"result": "failed"})
    body = json.loads(response.content)
    assert response["Content-Type"] == "application/json"
    assert body["filters"] == {"result": "failed"}
    assert body["chain"]["ok"] is True and body["chain"]["checked"] == 4
    assert [event["id"] for event in body["events"]] == [events[3].id]
    assert body["events"][0]["error"] == "FLR timed out"


def test_an_unknown_export_format_is_404(events, viewer_client):
    assert viewer_client.get(reverse("audit_export", kwargs={"fmt": "xml"})).status_code == 404


def test_a_changed_event_shows_the_chain_broken_and_names_it(events, viewer_client):
    AuditEvent.objects.filter(pk=events[1].pk).update(actor="mallory")  # behind the log's back
    html = viewer_client.get(AUDIT).content.decode()
    assert "The audit log was tampered with." in html
    assert f"Event {events[1].id} was changed after it was written" in html


def test_a_deleted_event_shows_the_chain_broken(events, viewer_client):
    AuditEvent.objects.filter(pk=events[1].pk)._raw_delete(AuditEvent.objects.db)
    html = viewer_client.get(AUDIT).content.decode()
    assert "The audit log was tampered with." in html
    assert f"Event {events[2].id} does not follow the event before it" in html
