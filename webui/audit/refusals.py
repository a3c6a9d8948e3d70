"""Auditing refusals without letting a flood grow the log.

Anyone who reaches the broker can send messages, and anyone who reaches the sign-in page
can keep trying once locked out. Each refusal is a fact worth keeping, but one audit row
per attempt would let 20,000 forged messages write 20,000 rows. So refusals are counted per
host and kind (``action``) in windows (``REFUSAL_WINDOW``): the first refusal of a window
is audited with its reason and a sample, the others only counted, and when the window has
passed the count is audited once (see :class:`webui.audit.models.RefusalBurst`).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from webui.audit.models import RefusalBurst, record

logger = logging.getLogger(__name__)

REFUSAL_WINDOW = datetime.timedelta(seconds=60)
ACTION = "broker_message"


def refuse(
    host: str,
    reason: str,
    sample: dict[str, Any],
    *,
    action: str = ACTION,
    job_id: int | None = None,
    actor: str = "worker",
    source: str = "worker",
) -> None:
    """Count one refusal; audit it if it opens a window, and close a window that has passed."""
    logger.warning("refused (%s): %s", action, reason)
    now = timezone.now()
    with transaction.atomic():
        burst = (
            RefusalBurst.objects.select_for_update()
            .filter(host=host, action=action, closed=False)
            .order_by("-id")
            .first()
        )
        if burst is not None and now - burst.started < REFUSAL_WINDOW:
            RefusalBurst.objects.filter(pk=burst.pk).update(count=burst.count + 1, last=now)
            return
        if burst is not None:
            _close(burst)
        RefusalBurst.objects.create(
            host=host, action=action, source=source, started=now, last=now, sample={"reason": reason, **sample}
        )
        record(
            actor=actor,
            source=source,
            host=host,
            action=action,
            parameters={**sample, "burst": "first refusal; more in the next minute are counted, not audited"},
            result="refused",
            error=reason,
            job_id=job_id,
        )


def close_finished_bursts(host: str) -> int:
    """Audit the count of every burst whose window has passed (the worker's heartbeat calls this)."""
    cutoff = timezone.now() - REFUSAL_WINDOW
    closed = 0
    with transaction.atomic():
        for burst in RefusalBurst.objects.select_for_update().filter(host=host, closed=False, started__lt=cutoff):
            _close(burst)
            closed += 1
    return closed


def _close(burst: RefusalBurst) -> None:
    RefusalBurst.objects.filter(pk=burst.pk).update(closed=True)
    more = burst.count - 1
    if more <= 0:
        return
    record(
        actor=burst.source,  # the count is the worker's or the web app's, not one sender's
        source=burst.source,
        host=burst.host,
        action=burst.action,
        parameters={
            "refused": burst.count,
            "from": burst.started.isoformat(),
            "to": burst.last.isoformat(),
            "first": burst.sample,
        },
        result="refused",
        error=(
            f"{burst.count} refused ({burst.action}) between {burst.started:%Y-%m-%d %H:%M:%S} and "
            f"{burst.last:%H:%M:%S} UTC ({more} after the first, counted, not audited one by one)."
        ),
    )
