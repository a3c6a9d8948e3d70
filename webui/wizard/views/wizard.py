"""The setup wizard's pages: "Step N of 5", resumable where the user left it.

Each step reads the host's latest snapshot and the user's :class:`WizardState`; the
choices are posted to ``wizard_actions``. A step further than the user has reached
sends them back to the step they have to finish first.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from passthrough.configgen import TARGETS, build_spec, generate
from passthrough.configgen.numa import AUTO, PINNING_TARGETS
from passthrough.errors import PassthroughError
from webui.hosts.models import Host, Snapshot
from webui.wizard import snapshots
from webui.wizard.forms import NumaPinForm, TargetForm
from webui.wizard.give import chosen_vm, options_form, plan_for
from webui.wizard.models import LAST_STEP, STEPS, WizardState
from webui.wizard.review import candidates, review
from webui.wizard.views.common import error_text, get_host
from webui.wizard.views.vmconfig import output_context


def wizard_state(request: HttpRequest, host: Host) -> WizardState:
    state, _ = WizardState.objects.get_or_create(user=request.user, host=host)
    return state


@require_GET
def wizard(request: HttpRequest, host: str) -> HttpResponse:
    found = get_host(request, host)
    return redirect("wizard_step", host=found.name, step=wizard_state(request, found).step)


@require_GET
def wizard_step(request: HttpRequest, host: str, step: int) -> HttpResponse:
    if step not in dict(STEPS):
        raise Http404(f"The wizard has steps 1 to {LAST_STEP}.")
    found = get_host(request, host)
    state = wizard_state(request, found)
    if step > state.reached:
        messages.info(request, f"Finish step {state.reached} ({dict(STEPS)[state.reached]}) first.")
        return redirect("wizard_step", host=found.name, step=state.reached)
    if state.step != step:
        state.step = step  # where to resume; a choice is only saved by posting it
        state.save(update_fields=["step", "updated"])
    snapshot = snapshots.latest(found)
    context: dict[str, Any] = {"host": found, "snapshot": snapshot, "state": state, "step": step, "steps": STEPS}
    if snapshot is not None:
        context.update(STEP_CONTEXT[step](request, state, snapshot))
    return render(request, f"wizard/step{step}.html", context)


def _check(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> dict[str, Any]:
    checks = snapshot.checks()
    return {"checks": checks, "failing": [check for check in checks if check.get("status") == "fail"]}


def _pick(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> dict[str, Any]:
    found, left_out = candidates(snapshots.inventory_of(snapshot))
    return {"candidates": found, "vfs_left_out": left_out}


def _plan(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> dict[str, Any]:
    plan = review(snapshots.inventory_of(snapshot), state.device, snapshot.readiness) if state.device else None
    plan_job = state.plan_job
    return {
        "review": plan,
        "plan_job": plan_job,
        "persistence": (plan_job.result or {}).get("plan") if plan_job and plan_job.is_finished else None,
    }


def _apply(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> dict[str, Any]:
    context = _plan(request, state, snapshot)
    context.update(bind_job=state.bind_job, persist_job=state.persist_job)
    return context


def _vm(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> dict[str, Any]:
    form = TargetForm({"target": request.GET.get("target", state.target)})
    target = form.cleaned_data["target"] if form.is_valid() else "qemu"
    context: dict[str, Any] = {"form": form, "target": target, "target_label": TARGETS[target]}
    if not state.device:
        return context
    context.update(_give(request, state, snapshot))
    inventory = snapshots.inventory_of(snapshot)
    # Unlike the target, the pin is not saved with the wizard's state: the page's URL keeps it.
    pin_form = NumaPinForm(request.GET, inventory=inventory)
    numa_pin = pin_form.cleaned_data["numa_pin"] if pin_form.is_valid() else AUTO
    try:
        spec = build_spec(inventory, [state.device], numa_pin=numa_pin)
        config = generate(inventory, spec, target)
    except PassthroughError as error:
        context["error"] = error_text(error)
        return context
    query = {
        "devices": state.device,
        "target": target,
        "name": spec.name,
        "firmware": spec.firmware,
        "machine": spec.machine,
        "memory_mib": spec.memory_mib,
        "vcpus": spec.vcpus,
    }
    if numa_pin != AUTO:
        query["numa_pin"] = numa_pin
    context.update(
        output_context(inventory, spec, config),
        pin_form=pin_form if target in PINNING_TARGETS and (pin_form.multi_node or pin_form.errors) else None,
        download=reverse("vmconfig_download", kwargs={"host": state.host.name}) + "?" + urlencode(query),
        more=reverse("vmconfig", kwargs={"host": state.host.name}) + "?" + urlencode(query),
    )
    return context


def _give(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> dict[str, Any]:
    vms, inventory = snapshot.vm_inventory, snapshots.inventory_of(snapshot)
    chosen = chosen_vm(vms, request.GET.get("vm") or state.vm)
    options = options_form(request.GET, inventory, state.device)  # primary GPU, ROM file: in the URL, not saved
    plan = plan_for(inventory, vms, chosen, state.device, options) if chosen else None
    return {"vms": vms, "chosen": chosen, "plan": plan, "vm_job": state.vm_job, "attach_options": options}


STEP_CONTEXT = {1: _check, 2: _pick, 3: _plan, 4: _apply, 5: _vm}
