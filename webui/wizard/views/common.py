"""What every page view does first: find the host, its latest snapshot, and submit jobs safely."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from passthrough.errors import InvalidAddress, PassthroughError
from passthrough.pci.address import PciAddress
from webui.hosts.models import Host
from webui.jobs.models import Job
from webui.jobs.service import submit
from webui.wizard import snapshots

SESSION_HOST = "host"


def hosts_of(request: HttpRequest) -> list[Host]:
    """Every host, read once per request: the page's own host and the header's switcher share it."""
    hosts: list[Host] | None = getattr(request, "_hosts", None)
    if hosts is None:
        hosts = list(Host.objects.order_by("name"))
        request._hosts = hosts  # type: ignore[attr-defined]
    return hosts


def get_host(request: HttpRequest, name: str) -> Host:
    """The host named in the URL (404 when unknown); it becomes the host the header shows."""
    host = next((host for host in hosts_of(request) if host.name == name), None)
    if host is None:
        raise Http404(f"There is no host named {name!r}. A host appears when its worker first starts.")
    if request.session.get(SESSION_HOST) != host.name:
        request.session[SESSION_HOST] = host.name
    return host


def selected_host(request: HttpRequest) -> Host | None:
    """The host last looked at in this session, else the first one."""
    hosts = hosts_of(request)
    name = request.session.get(SESSION_HOST)
    return next((host for host in hosts if host.name == name), hosts[0] if hosts else None)


def parse_address_or_404(text: str) -> str:
    try:
        return str(PciAddress.parse(text))
    except InvalidAddress:
        raise Http404(f"{text!r} is not a PCI address (for example 0000:01:00.0).") from None


def host_page(host: Host) -> dict[str, Any]:
    """The context every host page starts from: the host and its latest snapshot (or None)."""
    return {"host": host, "snapshot": snapshots.latest(host)}


def render_page(
    request: HttpRequest, template: str, context: dict[str, Any], partial: str | None = None, status: int = 200
) -> HttpResponse:
    """The whole page, or only ``partial`` of it when htmx asks (``template#partial``)."""
    if partial and getattr(request, "htmx", False):
        return render(request, f"{template}#{partial}", context, status=status)
    return render(request, template, context, status=status)


def run_job(
    request: HttpRequest,
    *,
    host: Host,
    action: str,
    targets: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
) -> Job | None:
    """Submit a job; on refusal (busy group, broker down, bad input) say why in the page and return None."""
    try:
        return submit(host=host, action=action, targets=targets or [], parameters=parameters, user=request.user)
    except PassthroughError as error:
        messages.error(request, error_text(error))
        return None


def error_text(error: PassthroughError) -> str:
    return " ".join(part for part in (error.message, error.hint or "") if part)
