"""The audit log in words: actions by the labels the filter uses, times with their zone."""

from __future__ import annotations

import datetime
import re

from django.urls import reverse

from webui.audit.models import AuditEvent, record

AUDIT = reverse("audit")


def cells(html: str) -> list[str]:
    return re.findall(r"<td>([^<]*)</td>", html)


def test_actions_are_shown_by_the_labels_the_filter_offers(db, viewer_client):
    record(actor="otto", source="web", host="duo", action="bind_vfio", targets=["0000:01:00.0"], result="requested")
    record(actor="otto", source="web", host="", action="sign_in", result="succeeded")
    record(actor="worker", source="worker", host="duo", action="broker_message", result="refused")
    html = viewer_client.get(AUDIT).content.decode()
    table = html[html.index('<table class="audit">') :]
    assert "Bind to vfio-pci" in cells(table) and "Sign in" in cells(table)
    assert "bind_vfio" not in cells(table) and "sign_in" not in cells(table)
    assert "Refused broker message" in cells(table)
    assert '<option value="bind_vfio">Bind to vfio-pci</option>' in html  # the filter's word for it
    assert '<option value="broker_message">Refused broker message</option>' in html


def test_an_action_the_app_does_not_know_is_shown_as_recorded(db, viewer_client):
    record(actor="shell:root", source="shell", host="duo", action="something_new", result="succeeded")
    assert "something_new" in cells(viewer_client.get(AUDIT).content.decode())


def test_times_carry_their_time_zone(db, viewer_client, settings):
    record(actor="otto", source="web", host="duo", action="scan", result="requested")
    moment = datetime.datetime(2026, 11, 27, 8, 40, 12, tzinfo=datetime.UTC)
    AuditEvent.objects.all().update(created=moment)
    html = viewer_client.get(AUDIT).content.decode()
    assert ">2026-11-27 08:40:12 UTC</td>" in html
