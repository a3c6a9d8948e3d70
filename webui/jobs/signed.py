"""A job's task message: signed once by the web app when it saves the job, then only published.

Every process that can write the database (each host's worker among them) could write a
queued job row. If a worker built and signed a message from such a row whenever it sends
a job again (after a broker restart, at its start), a row written by root on one host would
become a job another host's worker signs and runs. So the web app builds the message once,
in the transaction that saves the job (``sign``): the body serialized by Celery's ``auth``
serializer (signed with the web app's key), its content type and encoding, the headers
Celery needs (task name, id, ...) and the queue. The row keeps that text; every send, the
first one and each one again, publishes it as stored (``publish``), byte for byte, and signs
nothing. A worker holds no key the others trust, so a row without a stored message is a job
no worker sends (``webui.jobs.service.expire_stale`` closes it in the end).

What the message carries (``webui.jobs.messages.task_arguments``) names its job, its host
and when it was issued, so the runner refuses a stored message replayed onto a changed row.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from webui.jobs.messages import task_arguments
from webui.jobs.models import Job

FORMAT = 1


@dataclass(frozen=True)
class StoredMessage:
    """What kombu's ``Producer.publish`` needs to send a message it must not serialize again."""

    queue: str
    body: str  # the auth serializer's output: base64 of signer, signature, content type, encoding, JSON body
    content_type: str
    content_encoding: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    format: int = FORMAT

    def to_text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> StoredMessage | None:
        """The stored message, or None when there is none or it is not one this version wrote."""
        if not text:
            return None
        try:
            fields = json.loads(text)
            stored = cls(**fields)
        except (ValueError, TypeError):
            return None
        if stored.format != FORMAT or not isinstance(stored.body, str) or not isinstance(stored.headers, dict):
            return None
        return stored


def sign(job: Job) -> str:
    """The job's task message, built as Celery's ``apply_async`` builds it and signed with this process's key.

    Only the web app calls this (``service.create_job``, for a queued job); a worker's
    broker directory holds no key, and its ``auth`` serializer refuses to sign.
    """
    from kombu.serialization import dumps

    from webui.celery import app
    from webui.jobs.tasks import TASKS

    task = TASKS[job.action]
    message = app.amqp.create_task_message(
        job.task_id,
        task.name,
        (),
        task_arguments(job),
        time_limit=task.time_limit,  # the headers apply_async would give this task
        soft_time_limit=task.soft_time_limit,
    )
    content_type, content_encoding, body = dumps(message.body, serializer="auth")
    return StoredMessage(
        queue=job.host.queue,
        body=body.decode(content_encoding) if isinstance(body, bytes) else body,
        content_type=content_type,
        content_encoding=content_encoding,
        headers=dict(message.headers),
        properties=dict(message.properties),
    ).to_text()


def publish(stored: StoredMessage) -> None:
    """Send a stored message as it is: kombu serializes nothing when given a body with its content type.

    Raises kombu's OperationalError (or OSError) when the broker cannot be reached; no retry,
    so a dead broker fails the caller now.
    """
    from webui.celery import app

    queue = app.amqp.queues[stored.queue]
    # As Celery's send_task_message chooses it: the queue's exchange's, else the app's default.
    delivery_mode = queue.exchange.delivery_mode or app.conf.task_default_delivery_mode
    with app.producer_or_acquire() as producer, producer.connection._reraise_as_library_errors():
        producer.publish(
            stored.body,
            exchange="",  # the default exchange: the routing key is the queue's name, as Celery sends
            routing_key=queue.name,
            content_type=stored.content_type,
            content_encoding=stored.content_encoding,
            headers=dict(stored.headers),
            declare=[queue],
            delivery_mode=delivery_mode,
            retry=False,
            **stored.properties,
        )
