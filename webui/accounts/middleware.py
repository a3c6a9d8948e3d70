"""Per-request guards: the forced password change, the idle timeout, the Content-Security-Policy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from webui.accounts import events
from webui.accounts.models import must_change_password

SESSION_FLAG = "must_change_password"
# When the session last saw a request from its user (seconds since the epoch); polls do not count.
LAST_ACTIVITY = "last_activity"
# The stamp is rewritten at most this often, so a page load is not a session write every time.
ACTIVITY_RESOLUTION = 60
# Set in the fresh session of someone signed out for idling, so the sign-in page can say why.
SIGNED_OUT_IDLE = "signed_out_idle"


def remember_sign_in_state(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    """At sign-in, note in the session whether the password must change (one query, not one per
    page), and start the idle clock."""
    if must_change_password(user):
        request.session[SESSION_FLAG] = True
    else:
        request.session.pop(SESSION_FLAG, None)
    request.session[LAST_ACTIVITY] = time.time()


class PasswordChangeRequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated and request.session.get(SESSION_FLAG):
            allowed = {reverse("accounts:password"), reverse("accounts:sign_out")}
            if request.path not in allowed and not request.path.startswith("/static/"):
                return HttpResponseRedirect(reverse("accounts:password"))
        return self.get_response(request)


def is_poll(request: HttpRequest) -> bool:
    """An htmx GET: a job page following its job every second, or a filter updating a list.

    Neither is someone at the keyboard asking for something new, so neither keeps a
    session alive; a page load or any POST does.
    """
    return request.method == "GET" and request.headers.get("HX-Request") == "true"


class IdleTimeoutMiddleware:
    """Signs out a session that made no request but polls for ``SESSION_IDLE_MINUTES``.

    An htmx request that finds itself signed out (now, or earlier) is answered with
    ``HX-Redirect`` to the sign-in page, so the browser goes there instead of swapping the
    sign-in form into a job's progress box.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            now = time.time()
            last = request.session.get(LAST_ACTIVITY)
            if last is not None and now - last > settings.SESSION_IDLE_MINUTES * 60:
                events.record_web(
                    request,
                    events.AccountAction.SIGN_OUT,
                    "succeeded",
                    parameters={"reason": f"idle for more than {settings.SESSION_IDLE_MINUTES} minutes"},
                )
                logout(request)
                request.session[SIGNED_OUT_IDLE] = settings.SESSION_IDLE_MINUTES
            elif not is_poll(request) and (last is None or now - last >= ACTIVITY_RESOLUTION):
                request.session[LAST_ACTIVITY] = now
        response = self.get_response(request)
        if request.headers.get("HX-Request") == "true" and _redirects_to_sign_in(response):
            return HttpResponseClientRedirect(_sign_in_url(request))
        return response


def _redirects_to_sign_in(response: HttpResponse) -> bool:
    if response.status_code not in (301, 302, 303, 307, 308):
        return False
    return urlsplit(response["Location"]).path == resolve_url(settings.LOGIN_URL)


def _sign_in_url(request: HttpRequest) -> str:
    # Back to the page the user was on (htmx names it), not to the fragment it polled.
    current = urlsplit(request.headers.get("HX-Current-URL", ""))
    back = current.path + (f"?{current.query}" if current.query else "") if current.path else request.path
    return f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': back})}"


class ContentSecurityPolicyMiddleware:
    """The same fixed policy on every response: scripts, styles and images come only from static/.

    No nonces, no per-view policies, so a header set here is all it takes (and there is
    no inline script or style to allow: htmx and app.js are static files).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response
