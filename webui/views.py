"""Views of the project itself (not of one area): the health endpoint."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

# A health probe must answer quickly even when Redis is down or firewalled.
BROKER_TIMEOUT_SECONDS = 1.0


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """``{"ok", "database", "broker"}``: 200 when both answer, 503 when one does not; never an error page."""
    database = _database_answers()
    broker = _broker_answers()
    ok = database and broker
    return JsonResponse({"ok": ok, "database": database, "broker": broker}, status=200 if ok else 503)


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError:
        return False


def _broker_answers() -> bool:
    try:
        client = redis.Redis.from_url(
            settings.CELERY_BROKER_URL,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
            socket_timeout=BROKER_TIMEOUT_SECONDS,
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        # ValueError: a REDIS_URL redis-py cannot parse; the probe reports it rather than crash.
        return False
