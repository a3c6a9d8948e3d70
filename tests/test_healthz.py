"""/healthz answers for the database and the broker, and never with an error page."""

import pytest
import redis
from django.db import OperationalError, connection

pytestmark = pytest.mark.django_db

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"  # port 1 (tcpmux): nothing listens there


def _broker_is_up(url):
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def test_it_says_ok_when_the_database_and_broker_answer(client, settings):
    if not _broker_is_up(settings.CELERY_BROKER_URL):
        pytest.skip(f"no Redis answers at {settings.CELERY_BROKER_URL} (REDIS_URL)")
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "database": True, "broker": True}


def test_it_reports_an_unreachable_broker_as_false_with_503(client, settings):
    settings.CELERY_BROKER_URL = CLOSED_PORT_URL
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"] is False
    assert response.json()["database"] is True


def test_it_reports_a_broken_database_as_false_with_503(client, settings, monkeypatch):
    settings.CELERY_BROKER_URL = CLOSED_PORT_URL

    def refuse():
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"ok": False, "database": False, "broker": False}


def test_a_malformed_broker_url_is_reported_not_raised(client, settings):
    settings.CELERY_BROKER_URL = "not-a-url"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"] is False


def test_it_refuses_post(client):
    assert client.post("/healthz").status_code == 405
