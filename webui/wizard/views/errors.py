"""Error pages in words: what went wrong and what to do, never a stack trace."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.template import loader
from django.views.decorators.csrf import requires_csrf_token


def _message(exception: Exception | None) -> str | None:
    """The message a view gave its Http404 or PermissionDenied; URL-resolver internals are not shown."""
    if exception is None or not exception.args:
        return None
    message = exception.args[0]
    return message if isinstance(message, str) and message else None


def _render(request: HttpRequest, template: str, status: int, exception: Exception | None) -> HttpResponse:
    body = loader.render_to_string(template, {"message": _message(exception), "path": request.path}, request)
    return HttpResponse(body, status=status)


@requires_csrf_token
def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _render(request, "400.html", 400, None)  # a 400's message may echo hostile input


@requires_csrf_token
def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _render(request, "403.html", 403, exception)


@requires_csrf_token
def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _render(request, "404.html", 404, exception)


@requires_csrf_token
def server_error(request: HttpRequest) -> HttpResponse:
    # No request context: the database may be what failed, and context processors query it.
    return HttpResponse(loader.render_to_string("500.html"), status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return HttpResponse(loader.render_to_string("403_csrf.html", {"reason": reason}, request), status=403)
