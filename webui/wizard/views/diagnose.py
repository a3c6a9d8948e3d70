"""The Diagnose page: what the worker found in the host's kernel and VM logs, with each fix.

The web process never reads the host's logs: the worker diagnoses them when it takes a
snapshot (:func:`webui.hosts.snapshots.take_snapshot` stores ``readiness["diagnosis"]``),
and this page shows the latest snapshot's.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from webui.wizard.views.common import get_host, host_page


@require_GET
def diagnose(request: HttpRequest, host: str) -> HttpResponse:
    context = host_page(get_host(request, host))
    snapshot = context["snapshot"]
    # None: a snapshot taken before the worker diagnosed logs (or no snapshot at all).
    context["diagnosis"] = snapshot.readiness.get("diagnosis") if snapshot else None
    return render(request, "hosts/diagnose.html", context)
