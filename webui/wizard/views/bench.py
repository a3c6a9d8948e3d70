"""A hello-world page, routed only when bench/web.py asks for it (PASSTHROUGH_BENCH_HELLO).

It goes through the same middleware as every page (session, sign-in), so the benchmark
compares the groups page with the cheapest page this stack can serve.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET


@require_GET
def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("hello\n", content_type="text/plain")
