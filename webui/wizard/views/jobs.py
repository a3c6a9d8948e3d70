"""Jobs: the list, one job live (polled by htmx until it ends, then 286), cancel, undo and give back.

Giving back is one button on the bind job (back to the drivers and the consoles it took) and,
when the files still bind the device at every boot, one more on the give-back job (stop that).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from passthrough.ops.console import released_by
from webui.accounts.decorators import operator_required
from webui.jobs import service
from webui.jobs.models import VM_ACTIONS, Action, Job, State
from webui.wizard.forms import JobFilterForm
from webui.wizard.giveback import given_back_by
from webui.wizard.views.common import run_job

# Jobs that leave a file change behind, which an undo_change job restores from its backups.
UNDOABLE = (Action.PERSIST_BINDING, Action.UNPERSIST_BINDING, Action.SET_KERNEL_CMDLINE)


@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    form = JobFilterForm(request.GET)
    jobs = Job.objects.select_related("host").order_by("-created", "-id")
    if form.is_valid():
        data = form.cleaned_data
        if data["host"]:
            jobs = jobs.filter(host__name=data["host"])
        if data["state"]:
            jobs = jobs.filter(state=data["state"])
        if data["action"]:
            jobs = jobs.filter(action=data["action"])
    page = Paginator(jobs, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "jobs/list.html", {"form": form, "page": page, "query": query.urlencode()})


def previous_drivers(job: Job) -> dict[str, str | None]:
    """What each function of a bind job was on before it, as the job recorded."""
    functions = ((job.result or {}).get("state_before") or {}).get("functions") or {}
    return {
        address: state.get("driver")
        for address, state in functions.items()
        if isinstance(state, dict) and state.get("driver") != "vfio-pci"
    }


def bound_at_boot(job: Job) -> list[str]:
    """The functions a finished give-back left bound to vfio-pci at every boot, as its result read them."""
    if job.action != Action.RESTORE_DRIVER or job.state != State.SUCCEEDED:
        return []
    addresses = ((job.result or {}).get("state_after") or {}).get("bound_at_boot") or []
    return [address for address in addresses if isinstance(address, str)]


def job_context(job: Job) -> dict[str, Any]:
    undone_by = stopped_by = None
    if job.action in UNDOABLE or job.action in VM_ACTIONS:
        undone_by = Job.objects.filter(action=Action.UNDO_CHANGE, parameters__undo_of=job.pk).first()
    at_boot = bound_at_boot(job)
    if at_boot:
        stopped_by = Job.objects.filter(action=Action.UNPERSIST_BINDING, parameters__after_give_back=job.pk).first()
    result = job.result or {}
    given_back = given_back_by(job) if job.action == Action.BIND_VFIO and job.state == State.SUCCEEDED else None
    return {
        "job": job,
        "can_undo": (job.action in UNDOABLE or job.action in VM_ACTIONS)
        and job.state == State.SUCCEEDED
        and bool(result.get("undo")),
        "undone_by": undone_by,
        "can_give_back": job.action == Action.BIND_VFIO and job.state == State.SUCCEEDED and given_back is None,
        "given_back_by": given_back,
        "bound_at_boot": at_boot,
        "stopped_by": stopped_by,
        "show_states": True,
        "max_wait_minutes": settings.PASSTHROUGH_JOB_MAX_WAIT // 60,
    }


@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("host", "snapshot"), pk=pk)
    context = job_context(job)
    if getattr(request, "htmx", False):
        response = render(request, "jobs/detail.html#progress", context)
        if job.is_finished:
            response.status_code = HTMX_STOP_POLLING  # htmx swaps this last answer in, then stops asking
            if request.GET.get("then") == "reload":
                # A page built around the job (a wizard step) shows what comes next once it ends.
                response["HX-Refresh"] = "true"
        return response
    return render(request, "jobs/detail.html", context)


@require_POST
@operator_required
def undo(request: HttpRequest, pk: int) -> HttpResponse:
    job = get_object_or_404(Job.objects.select_related("host"), pk=pk)
    if not job_context(job)["can_undo"]:
        messages.error(
            request, f"Job {job.pk} left nothing to undo: only a finished persistence job or VM change can be undone."
        )
        return redirect("job", pk=job.pk)
    made = run_job(request, host=job.host, action=Action.UNDO_CHANGE, parameters={"undo_of": job.pk, "force": False})
    return redirect("job", pk=(made or job).pk)


@require_POST
@operator_required
def give_back(request: HttpRequest, pk: int) -> HttpResponse:
    """Give back what a job took from the host.

    On a bind job: restore_driver for its group, back to the drivers it had before and with
    the consoles the bind released. On a give-back job that left the group bound at every
    boot: unpersist_binding for those functions ("Also stop binding it at boot").
    """
    job = get_object_or_404(Job.objects.select_related("host"), pk=pk)
    context = job_context(job)
    if context["bound_at_boot"] and context["stopped_by"] is None:
        made = run_job(
            request,
            host=job.host,
            action=Action.UNPERSIST_BINDING,
            targets=context["bound_at_boot"],
            parameters={"fingerprint": None, "after_give_back": job.pk},
        )
        return redirect("job", pk=(made or job).pk)
    if not context["can_give_back"]:
        messages.error(request, f"Job {job.pk} did not bind anything to vfio-pci, so there is nothing to give back.")
        return redirect("job", pk=job.pk)
    parameters: dict[str, Any] = {"previous_drivers": previous_drivers(job) or None}
    result = job.result or {}
    released = released_by(result.get("state_before"), result.get("state_after"))
    if released:
        parameters["released_console"] = released
    made = run_job(request, host=job.host, action=Action.RESTORE_DRIVER, targets=job.targets[:1], parameters=parameters)
    return redirect("job", pk=(made or job).pk)


@require_POST
@operator_required
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel a job that is still queued; the worker then drops its message unrun."""
    job = get_object_or_404(Job.objects.select_related("host"), pk=pk)
    if service.cancel(job, request.user):
        messages.success(request, f"Job {job.pk} was cancelled before it started; nothing was changed.")
    else:
        job.refresh_from_db()
        messages.error(
            request, f"Job {job.pk} is {job.get_state_display().lower()}, not queued: it cannot be cancelled."
        )
    return redirect("job", pk=job.pk)
