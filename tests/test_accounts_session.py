"""Idle sessions end, and job polls do not keep them alive.

Time is moved by moving the session's last-activity stamp into the past.
"""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse

from tests.web_support import make_user, signed_in
from webui.accounts.middleware import LAST_ACTIVITY
from webui.accounts.roles import VIEWER
from webui.audit.models import AuditEvent

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def client() -> Client:
    return signed_in(make_user("vera", VIEWER))


def idle_for(client: Client, minutes: float) -> None:
    session = client.session
    session[LAST_ACTIVITY] = time.time() - minutes * 60
    session.save()


def last_activity(client: Client) -> float:
    return client.session[LAST_ACTIVITY]


def poll(client: Client, page: str = "/jobs/"):
    return client.get(reverse("jobs"), HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=f"http://testserver{page}")


def test_the_default_idle_time_is_thirty_minutes():
    assert settings.SESSION_IDLE_MINUTES == 30


@pytest.mark.parametrize(
    ("value", "message"),
    [("soon", "SESSION_IDLE_MINUTES='soon' is not a whole number"), ("0", "must each be 1 or more")],
)
def test_a_malformed_idle_time_stops_start_up_in_words(value, message, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "only-for-this-test")
    monkeypatch.setenv("SESSION_IDLE_MINUTES", value)
    with pytest.raises(ImproperlyConfigured, match=message):
        runpy.run_path(str(REPO / "webui" / "settings.py"))


def test_a_session_idle_for_longer_than_the_limit_must_sign_in_again(client):
    idle_for(client, 31)
    response = client.get(reverse("jobs"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:sign_in"))
    assert "_auth_user_id" not in client.session
    page = client.get(response["Location"]).content.decode()
    assert "You were signed out after 30 minutes without activity." in page
    event = AuditEvent.objects.get(action="sign_out")
    assert (event.actor, event.result, event.parameters["reason"]) == (
        "vera",
        "succeeded",
        "idle for more than 30 minutes",
    )


def test_a_page_load_keeps_the_session_alive(client):
    idle_for(client, 29)
    assert client.get(reverse("jobs")).status_code == 200
    assert time.time() - last_activity(client) < 5
    idle_for(client, 29)
    assert client.get(reverse("jobs")).status_code == 200


def test_polling_does_not_keep_the_session_alive(client):
    idle_for(client, 29)
    stamp = last_activity(client)
    assert poll(client).status_code == 200
    assert last_activity(client) == stamp  # the poll was answered but did not count
    idle_for(client, 31)  # two more minutes of nothing but polls
    response = poll(client, "/jobs/?host=duo")
    assert response.status_code == 200 and not response.content
    assert response["HX-Redirect"] == f"{reverse('accounts:sign_in')}?next=%2Fjobs%2F%3Fhost%3Dduo"
    assert "_auth_user_id" not in client.session


def test_a_post_from_htmx_counts_as_activity(client):
    idle_for(client, 29)
    client.post(reverse("accounts:sign_out"), HTTP_HX_REQUEST="true")  # any POST; this one ends the session
    assert AuditEvent.objects.get(action="sign_out").parameters["reason"] == "signed out"


def test_an_htmx_request_without_a_session_is_sent_to_sign_in_not_given_the_form():
    response = Client().get(reverse("jobs"), HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/jobs/")
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"{reverse('accounts:sign_in')}?next=%2Fjobs%2F"
