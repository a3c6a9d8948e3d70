"""The sign-in throttle's two answers django-axes leaves to us: whose address, and the refusal in words.

django-axes counts failed sign-ins in the database (so both gunicorn workers see the same
count) and locks an account, or a client address, after ``SIGN_IN_FAILURE_LIMIT`` failures
(settings.py). This module tells it the client's address and writes the 429 page.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from axes.models import AccessAttempt
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from webui.audit import refusals


def client_address(request: HttpRequest) -> str | None:
    """REMOTE_ADDR; behind a proxy that says so (TRUST_X_FORWARDED_FOR), the address it appended.

    A proxy appends the address it saw to X-Forwarded-For, so only the last entry is the
    proxy's word: the ones before it are whatever the client sent.
    """
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",")]
        if forwarded[-1]:
            return forwarded[-1]
    return request.META.get("REMOTE_ADDR") or None


def lock_on(username: str | None, address: str | None, now: datetime | None = None) -> tuple[str, datetime] | None:
    """Which lock holds ("account" or "address") and when it lifts; None when neither does.

    The rule is django-axes' own: failures recorded within the cool-off count, and a lock
    holds while they add up to the limit. Failures expire oldest first, so the lock lifts
    when the newest failure that still makes up the limit is a cool-off old.
    """
    now = now or timezone.now()
    cool_off = settings.AXES_COOLOFF_TIME
    for kind, filters in (("account", {"username": username}), ("address", {"ip_address": address})):
        failures = 0
        recent = AccessAttempt.objects.filter(**filters, attempt_time__gte=now - cool_off).order_by("-attempt_time")
        for attempt_time, count in recent.values_list("attempt_time", "failures_since_start"):
            failures += count
            if failures >= settings.AXES_FAILURE_LIMIT:
                return kind, attempt_time + cool_off
    return None


def in_words(seconds: float) -> str:
    """A wait rounded up to the minute: "1 minute", "14 minutes", "2 hours 5 minutes"."""
    minutes = max(1, math.ceil(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    parts = [f"{hours} hour{'s' if hours != 1 else ''}"] if hours else []
    if minutes or not hours:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    return " ".join(parts)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """The sign-in page again, answered 429, saying which lock holds and for how long (AXES_LOCKOUT_CALLABLE)."""
    username = (credentials or {}).get("username") or request.POST.get("username") or ""
    address = client_address(request)
    now = timezone.now()
    kind, until = lock_on(username, address, now) or ("account", now + settings.AXES_COOLOFF_TIME)
    wait = in_words((until - now).total_seconds())
    if kind == "account":
        message = f"Too many failed sign-ins for this account. Try again in {wait}."
    else:
        message = f"Too many failed sign-ins from your address ({address}). Try again in {wait}."
    # Counted, not audited one by one: someone hammering a locked account cannot grow the log.
    refusals.refuse(
        settings.PASSTHROUGH_HOSTNAME,
        message,
        {"username": username[:150], "address": address, "lock": kind, "until": until.isoformat()},
        action="sign_in_locked_out",
        actor="anonymous",
        source="web",
    )
    context = {"lockout": message, "username": username, "next": request.POST.get("next", "")}
    response = TemplateResponse(request, "accounts/sign_in.html", context, status=429)
    response["Retry-After"] = str(max(1, math.ceil((until - now).total_seconds())))
    return response.render()
