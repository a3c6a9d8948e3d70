"""Guards for views: every POST in this app changes something, so every POST needs an operator."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from webui.accounts.roles import can_operate

NOT_AN_OPERATOR = (
    "Your account is a viewer: it can read every page, but running jobs on a host needs the operator role. "
    "Ask an admin to run `manage.py add_user` with --role operator, or to add you to the operator group."
)


def operator_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """403 with the reason in words for anyone without ``jobs.run_jobs`` (sign-in is checked before)."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_operate(request.user):
            raise PermissionDenied(NOT_AN_OPERATOR)
        return view(request, *args, **kwargs)

    return guarded
