"""The PCIe tree as a picture, drawn server-side from the snapshot (passthrough.topology)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from webui.wizard import snapshots
from webui.wizard.views.common import get_host, host_page


@require_GET
def topology(request: HttpRequest, host: str) -> HttpResponse:
    context = host_page(get_host(request, host))
    if context["snapshot"] is not None:
        # The device URL with a placeholder the renderer fills per function.
        link = reverse("device", kwargs={"host": context["host"].name, "address": "ADDRESS"}).replace(
            "ADDRESS", "{address}"
        )
        prepared = snapshots.prepared(context["snapshot"])
        # render_svg escapes every text and attribute it writes.
        context["svg"] = mark_safe(prepared.topology_svg(link))
        context["functions"] = len(prepared.inventory.devices)
    return render(request, "hosts/topology.html", context)
