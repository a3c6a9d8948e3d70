"""The PCIe tree as a picture, drawn server-side from the snapshot (passthrough.topology)."""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from passthrough.topology import render_svg
from webui.wizard import snapshots
from webui.wizard.views.common import get_host, host_page


@require_GET
def topology(request: HttpRequest, host: str) -> HttpResponse:
    """The page; with ?download=svg the picture alone, as a file to keep or print."""
    context = host_page(get_host(request, host))
    if context["snapshot"] is not None:
        name = context["host"].name
        # The device URL with a placeholder the renderer fills per function.
        link = reverse("device", kwargs={"host": name, "address": "ADDRESS"}).replace("ADDRESS", "{address}")
        prepared = snapshots.prepared(context["snapshot"])
        if request.GET.get("download") == "svg":
            # On its own the picture names its host and links back with absolute URLs
            # (build_absolute_uri would quote the placeholder's braces).
            origin = f"{request.scheme}://{request.get_host()}"
            svg = render_svg(prepared.inventory, link=origin + link, title=f"PCIe topology of {name}")
            response = HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")
            filename = re.sub(r"[^A-Za-z0-9._-]", "_", name)  # a host name is the worker's word, not ours
            response["Content-Disposition"] = f'attachment; filename="topology-{filename}.svg"'
            return response
        # render_svg escapes every text and attribute it writes.
        context["svg"] = mark_safe(prepared.topology_svg(link))
        context["functions"] = len(prepared.inventory.devices)
    return render(request, "hosts/topology.html", context)
