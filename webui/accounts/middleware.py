"""An account created with a printed one-time password must choose its own before anything else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from webui.accounts.models import must_change_password

SESSION_FLAG = "must_change_password"


def remember_password_state(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    """At sign-in, note in the session whether the password must change (one query, not one per page)."""
    if must_change_password(user):
        request.session[SESSION_FLAG] = True
    else:
        request.session.pop(SESSION_FLAG, None)


class PasswordChangeRequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated and request.session.get(SESSION_FLAG):
            allowed = {reverse("accounts:password"), reverse("accounts:sign_out")}
            if request.path not in allowed and not request.path.startswith("/static/"):
                return HttpResponseRedirect(reverse("accounts:password"))
        return self.get_response(request)
