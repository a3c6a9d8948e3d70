"""The worker's message consumer: what happens to a message the worker will not run.

Celery logs a message it cannot decode (unsigned, signed by an unknown key, altered), a
task name it does not know (Celery's own built-ins included: the worker unregisters them)
and a malformed message, then drops it. This consumer also counts each one in the audit
log (aggregated, see webui/audit/refusals.py), and it never starts mingle, gossip or the
event heartbeat: those listen to unsigned broadcasts that other workers (or anyone on the
broker) send.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

# Celery registers these on every app; none of ours sends them, so no message may run them.
BUILTIN_PREFIX = "celery."


def _sample(message: Any) -> dict[str, Any]:
    headers = getattr(message, "headers", None) or {}
    delivery = getattr(message, "delivery_info", None) or {}
    return {
        "task": str(headers.get("task", ""))[:100],
        "id": str(headers.get("id", ""))[:100],
        "content_type": str(getattr(message, "content_type", ""))[:60],
        "queue": str(delivery.get("routing_key", ""))[:100],
    }


def _refuse(reason: str, message: Any) -> None:
    from webui.audit.refusals import refuse

    try:
        close_old_connections()
        refuse(settings.PASSTHROUGH_HOSTNAME, reason, _sample(message))
    except Exception:  # the database may be down; the refusal itself has happened either way
        logger.warning("could not audit a refused message", exc_info=True)


class GuardedConsumer(Consumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from webui.jobs.broker import BrokerRefused, SigningFiles, check_broker_url

        check_broker_url(settings.CELERY_BROKER_URL, settings.PASSTHROUGH_ALLOW_UNAUTHENTICATED_BROKER)
        from webui.celery import SIGNING_READY

        if not SIGNING_READY:
            raise BrokerRefused(SigningFiles(settings.BROKER_SIGNING_DIR).missing())
        kwargs.update(without_mingle=True, without_gossip=True, without_heartbeat=True)
        super().__init__(*args, **kwargs)
        for name in [name for name in self.app.tasks if name.startswith(BUILTIN_PREFIX)]:
            self.app.tasks.unregister(name)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        logger.error("refused a message that is not signed by a trusted key: %s", exc)
        message.ack()
        _refuse(f"A message that is not signed by a trusted key, or was altered, was dropped ({exc}).", message)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        super().on_unknown_message(body, message)
        _refuse("A message that is not a task was dropped.", message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_unknown_task(body, message, exc)
        _refuse(f"A message for a task this worker does not run was dropped ({exc}).", message)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        from kombu.exceptions import ContentDisallowed

        super().on_invalid_task(body, message, exc)
        if isinstance(exc, ContentDisallowed):
            _refuse(f"A message that is not signed by a trusted key was dropped ({exc}).", message)
        else:
            _refuse(f"A malformed task message was dropped ({exc}).", message)
