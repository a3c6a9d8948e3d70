"""The home page, a host's dashboard, and its readiness checks."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from passthrough.diagnose.bootcheck import BOOT_BINDING_LOST
from webui.accounts.decorators import operator_required
from webui.hosts.models import Snapshot
from webui.jobs.models import Job
from webui.wizard import snapshots
from webui.wizard.catalog import NEEDS_CONFIRMATION, NOT_VIABLE, VIABLE
from webui.wizard.models import WizardState
from webui.wizard.views.common import SESSION_HOST, get_host, host_page, hosts_of, run_job, selected_host
from webui.wizard.views.jobs import job_context

VFIO = "vfio-pci"


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    host = selected_host(request)
    if host is None:
        return render(request, "hosts/no_hosts.html")
    if len(hosts_of(request)) > 1 and SESSION_HOST not in request.session:
        return redirect("hosts")  # several hosts and none looked at yet: the list of them all
    return redirect("host_home", host=host.name)


@require_GET
def host_home(request: HttpRequest, host: str) -> HttpResponse:
    """The wizard until a device has been passed through (or the user finished it), then the dashboard."""
    context = host_page(get_host(request, host))
    snapshot = context["snapshot"]
    prepared = snapshots.prepared(snapshot) if snapshot else None
    on_vfio = [function for function in prepared.inventory.devices if function.driver == VFIO] if prepared else []
    state = WizardState.objects.filter(user=request.user, host=context["host"]).first()
    lost = boot_bindings_lost(snapshot) if snapshot else []
    if not on_vfio and not lost and not (state and state.finished) and "dashboard" not in request.GET:
        return redirect("wizard", host=context["host"].name)
    # Groups of bridges alone are not "cannot": they hold nothing a VM could be given.
    cards = prepared.cards if prepared else []
    verdicts = [card.verdict for card in cards if not card.nothing_to_pass]
    context.update(
        on_vfio=on_vfio,
        viable=verdicts.count(VIABLE),
        needs_confirmation=verdicts.count(NEEDS_CONFIRMATION),
        not_viable=verdicts.count(NOT_VIABLE),
        nothing_to_pass=len(cards) - len(verdicts),
        functions=len(prepared.inventory.devices) if prepared else 0,
        jobs=Job.objects.filter(host=context["host"]).select_related("host")[:8],
        wizard=state,
        boot_lost=lost,
    )
    return render(request, "hosts/dashboard.html", context)


def boot_bindings_lost(snapshot: Snapshot) -> list[tuple[int, dict[str, Any]]]:
    """The functions bound to vfio-pci at boot that this boot did not give it, each with its number on the Diagnose page."""
    findings = (snapshot.readiness.get("diagnosis") or {}).get("findings") or []
    return [(number, finding) for number, finding in enumerate(findings, 1) if finding.get("id") == BOOT_BINDING_LOST]


@require_GET
def readiness(request: HttpRequest, host: str) -> HttpResponse:
    """The checks; with ``?scan=<job>`` ("Check again"), that scan too: followed while it runs, then its outcome."""
    context = host_page(get_host(request, host))
    scan_job = request.GET.get("scan", "")
    job = (
        Job.objects.filter(pk=int(scan_job), host=context["host"], action="scan").first()
        if scan_job.isdigit()
        else None
    )
    if job is not None:
        context.update(job_context(job), scan_job=job)  # the job's progress, as its own page shows it
    return render(request, "hosts/readiness.html", context)


@require_POST
@operator_required
def scan(request: HttpRequest, host: str) -> HttpResponse:
    """ "Check again": a scan job, followed on the readiness page, which then shows the checks of its snapshot."""
    found = get_host(request, host)
    job = run_job(request, host=found, action="scan")
    readiness_page = reverse("readiness", kwargs={"host": found.name})
    return redirect(f"{readiness_page}?scan={job.pk}" if job else readiness_page)


@require_POST
@operator_required
def apply_fix(request: HttpRequest, host: str, check: str) -> HttpResponse:
    """The kernel command-line edit a readiness check proposes, as a set_kernel_cmdline job."""
    found = get_host(request, host)
    snapshot = snapshots.latest(found)
    checks = {item["id"]: item for item in snapshot.checks()} if snapshot else {}
    plan = (checks.get(check) or {}).get("plan") or {}
    if not (plan.get("add") or plan.get("remove")):
        messages.error(request, f"The check {check!r} proposes no kernel command-line change on {found.name}.")
        return redirect("readiness", host=found.name)
    if not plan.get("edits"):
        messages.error(
            request,
            f"No boot loader configuration was found on {found.name}, so a job cannot make this change; "
            "the check's fix says how to make it by hand.",
        )
        return redirect("readiness", host=found.name)
    job = run_job(
        request,
        host=found,
        action="set_kernel_cmdline",
        parameters={"add": list(plan.get("add") or []), "remove": list(plan.get("remove") or []), "fingerprint": None},
    )
    return redirect("job", pk=job.pk) if job else redirect("readiness", host=found.name)
