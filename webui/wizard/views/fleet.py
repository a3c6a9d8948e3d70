"""Every host at once: the host list, readiness everywhere, and one VF count on one NIC model everywhere.

"Refresh every host" and "Check readiness everywhere" send one scan job to each online host
(the scan stores readiness with the inventory) and follow them on the page, polled by htmx
until every one has ended (then 286), reloading itself without JavaScript. Offline hosts are
not asked: the page says which and since when. The VF change is one set_sriov_vfs job per
physical function, each checked against its host's snapshot here and by its own worker.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from passthrough.errors import PassthroughError
from webui.accounts.decorators import operator_required
from webui.hosts.models import Host
from webui.hosts.registration import app_version
from webui.jobs.models import Action, Job
from webui.jobs.service import submit
from webui.wizard import fleet
from webui.wizard.views.common import error_text, hosts_of

MAX_FOLLOWED = 500


def _followed(request: HttpRequest) -> dict[int, Job]:
    """The scan jobs named in ``?scans=1,2,3``, newest per host: what the page follows."""
    ids = [int(part) for part in request.GET.get("scans", "").split(",") if part.isdigit()][:MAX_FOLLOWED]
    jobs = Job.objects.filter(pk__in=ids, action=Action.SCAN).order_by("id")
    return {job.host_id: job for job in jobs}


def _page(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """The page, or (htmx polling) its live part; 286 once every followed scan has ended."""
    scans = list(context["scans"].values())
    context["following"] = any(not job.is_finished for job in scans)
    context["finished"] = sum(1 for job in scans if job.is_finished)
    if getattr(request, "htmx", False):
        response = render(request, f"{template}#live", context)
        if not context["following"]:
            response.status_code = HTMX_STOP_POLLING
        return response
    return render(request, template, context)


def _context(request: HttpRequest) -> dict[str, Any]:
    hosts = hosts_of(request)
    scans = _followed(request)
    rows = fleet.host_rows(hosts, scans)
    return {
        "rows": rows,
        "scans": scans,
        "summary": fleet.readiness_summary(rows),
        "version": app_version(),
        "offline_after": _seconds_in_words(settings.PASSTHROUGH_OFFLINE_AFTER),
    }


def _seconds_in_words(seconds: int) -> str:
    if seconds < 120 or seconds % 60:
        return f"{seconds} seconds"
    return f"{seconds // 60} minutes"


@require_GET
def host_list(request: HttpRequest) -> HttpResponse:
    context = _context(request)
    context["vfio"] = fleet.vfio_rows(context["rows"])
    return _page(request, "hosts/fleet.html", context)


@require_GET
def fleet_readiness(request: HttpRequest) -> HttpResponse:
    context = _context(request)
    context["columns"] = fleet.check_columns(context["rows"])
    return _page(request, "hosts/fleet_readiness.html", context)


def _scan_everywhere(request: HttpRequest) -> list[Job]:
    """A scan job for every online host; the offline ones are named, not asked."""
    jobs, offline = [], []
    for host in hosts_of(request):
        if host.is_offline:
            offline.append(host.absence())
            continue
        try:
            jobs.append(submit(host=host, action=Action.SCAN, targets=[], user=request.user))
        except PassthroughError as error:
            messages.error(request, f"{host.name} was not asked: {error_text(error)}")
    if jobs:
        names = ", ".join(job.host.name for job in jobs)
        messages.success(request, f"Asked {len(jobs)} host{'s' if len(jobs) != 1 else ''} for a fresh scan: {names}.")
    for absence in offline:
        messages.info(request, f"Not asked: {absence}. Its worker scans it when it starts again.")
    if not jobs and not offline and not hosts_of(request):
        messages.error(request, "There is no host yet: a host appears when its worker first starts.")
    return jobs


def _following(page: str, jobs: list[Job]) -> HttpResponse:
    url = reverse(page)
    return redirect(f"{url}?scans={','.join(str(job.pk) for job in jobs)}" if jobs else url)


@require_POST
@operator_required
def refresh_hosts(request: HttpRequest) -> HttpResponse:
    return _following("hosts", _scan_everywhere(request))


@require_POST
@operator_required
def check_everywhere(request: HttpRequest) -> HttpResponse:
    return _following("fleet_readiness", _scan_everywhere(request))


def _count(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() and int(text) <= 65535 else None


@require_GET
def fleet_sriov(request: HttpRequest) -> HttpResponse:
    """Pick a NIC model and a VF count; see, host by host, where it fits and why not elsewhere."""
    rows = fleet.host_rows(hosts_of(request))
    models = fleet.sriov_models(rows)
    model = next((m for m in models if m.key == request.GET.get("model")), models[0] if len(models) == 1 else None)
    count = _count(request.GET.get("count"))
    targets = fleet.sriov_targets(rows, model.key, count) if model and count is not None else []
    context = {"models": models, "model": model, "count": count, "targets": targets}
    context["fitting"] = [target for target in targets if target.fits]
    return render(request, "hosts/fleet_sriov.html", context)


@require_POST
@operator_required
def fleet_sriov_apply(request: HttpRequest) -> HttpResponse:
    """One set_sriov_vfs job per chosen function that still fits by its host's latest snapshot."""
    model, count = request.POST.get("model", ""), _count(request.POST.get("count"))
    back = reverse("fleet_sriov")
    if count is None or ":" not in model:
        messages.error(request, "Pick a NIC model and give a number of virtual functions from 0 to 65535.")
        return redirect(back)
    chosen = set(request.POST.getlist("target"))
    if not chosen:
        messages.error(request, "No function was ticked, so nothing was changed.")
        return redirect(f"{back}?model={model}&count={count}")
    hosts: list[Host] = hosts_of(request)
    targets = {t.value: t for t in fleet.sriov_targets(fleet.host_rows(hosts), model, count)}
    made = []
    for value in sorted(chosen):
        target = targets.get(value)
        if target is None or not target.fits:
            why = target.refusal if target else "it is not a physical function of this model in its host's snapshot"
            messages.error(request, f"{value.replace('|', ' ')} was left as it is: {why}.")
            continue
        parameters = {"count": count, "confirm": None}
        try:
            job = submit(
                host=target.host,
                action=Action.SET_SRIOV_VFS,
                targets=[target.address],
                parameters=parameters,
                user=request.user,
            )
        except PassthroughError as error:
            messages.error(request, f"{target.host.name} {target.address} was left as it is: {error_text(error)}")
            continue
        made.append(job)
    if made:
        listed = ", ".join(f"job {job.pk} on {job.host.name}" for job in made)
        messages.success(request, f"Asked for {count} virtual functions on {len(made)} function(s): {listed}.")
    return redirect(
        f"{reverse('jobs')}?action={Action.SET_SRIOV_VFS}" if made else f"{back}?model={model}&count={count}"
    )
