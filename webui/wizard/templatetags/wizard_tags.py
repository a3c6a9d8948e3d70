"""Small filters the templates share: short addresses, step times, readable JSON."""

from __future__ import annotations

import datetime
import json
from typing import Any

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

register = template.Library()


@register.filter
def short(address: str | None) -> str:
    """``01:00.0`` for ``0000:01:00.0``; other domains stay, they are part of the name."""
    if not address:
        return ""
    return address[5:] if address.startswith("0000:") else address


@register.filter
def epoch(value: float | None) -> datetime.datetime | None:
    """A step's time (seconds since the epoch, as the worker records it) as a datetime."""
    if value is None:
        return None
    return datetime.datetime.fromtimestamp(float(value), tz=datetime.UTC).astimezone(timezone.get_current_timezone())


@register.filter
def ago(value: datetime.datetime | None) -> str:
    """ "just now", "3 minutes ago": when a snapshot or job was made."""
    if value is None:
        return ""
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value)} ago"


@register.filter
def seconds(step: dict[str, Any]) -> str:
    started, finished = step.get("started"), step.get("finished")
    if not started or not finished:
        return ""
    taken = float(finished) - float(started)
    return f"{taken * 1000:.0f} ms" if taken < 1 else f"{taken:.1f} s"


@register.filter
def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def get(mapping: dict[str, Any] | None, key: str) -> Any:
    return (mapping or {}).get(key)
