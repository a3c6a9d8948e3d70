"""A host's overview: the group counts, and when its picture was taken."""

from __future__ import annotations

import datetime
import re

from django.urls import reverse

from webui.hosts.models import Snapshot

OVERVIEW = reverse("host_home", kwargs={"host": "duo"}) + "?dashboard=1"


def test_groups_of_bridges_alone_are_counted_as_nothing_to_pass_not_as_cannot(duo, viewer_client):
    html = viewer_client.get(OVERVIEW).content.decode()
    # duo: a host bridge alone (group 1) and four root ports alone (6 to 9); the chipset (10) cannot go.
    assert "1 cannot" in html and "5 nothing to pass" in html
    assert "6 cannot" not in html


def test_the_snapshot_line_gives_the_time_with_its_zone(duo, viewer_client):
    moment = datetime.datetime(2026, 11, 27, 8, 40, 12, tzinfo=datetime.UTC)
    Snapshot.objects.all().update(created=moment)
    html = viewer_client.get(OVERVIEW).content.decode()
    line = re.search(r'<p class="snapshot-line">(.*?)</p>', html, re.S)
    assert line and "2026-11-27 08:40:12 UTC" in line.group(1)
