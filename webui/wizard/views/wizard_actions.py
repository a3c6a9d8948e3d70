"""What the wizard's steps post: each checks the choice against the snapshot, saves it, moves on.

Every action needs an operator (it saves choices that lead to jobs, or submits them);
refusals come back as a message on the step, in words.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_POST

from passthrough.errors import PassthroughError
from passthrough.ops.interlock import BIND, check_action
from webui.accounts.decorators import operator_required
from webui.hosts.models import Snapshot
from webui.jobs.models import Action, State
from webui.wizard import snapshots
from webui.wizard.forms import AcknowledgeForm, NewVmForm, PickForm, PlanForm, TargetForm
from webui.wizard.give import chosen_vm, options_form
from webui.wizard.models import STEPS, WizardState
from webui.wizard.review import Review, candidates, review
from webui.wizard.views.common import error_text, get_host, run_job
from webui.wizard.views.wizard import wizard_state

Action_ = Callable[[HttpRequest, WizardState, Snapshot], int]  # returns the step to show next
FINISHED = 0


@require_POST
@operator_required
def wizard_submit(request: HttpRequest, host: str, step: int) -> HttpResponse:
    if step not in dict(STEPS):
        raise Http404(f"The wizard has steps 1 to {len(STEPS)}.")
    found = get_host(request, host)
    state = wizard_state(request, found)
    snapshot = snapshots.latest(found)
    if snapshot is None:
        messages.error(request, f"{found.name} has no snapshot yet: start its worker, then check again.")
        return redirect("wizard_step", host=found.name, step=1)
    if step > state.reached:
        return redirect("wizard_step", host=found.name, step=state.reached)
    next_step = ACTIONS[step](request, state, snapshot)
    if next_step == FINISHED:
        state.save()
        return redirect("host_home", host=found.name)
    state.go_to(next_step)
    state.save()
    return redirect("wizard_step", host=found.name, step=next_step)


@require_POST
@operator_required
def wizard_restart(request: HttpRequest, host: str) -> HttpResponse:
    found = get_host(request, host)
    state = wizard_state(request, found)
    state.restart()
    state.save()
    return redirect("wizard_step", host=found.name, step=1)


def _acknowledge(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> int:
    failing = {check["id"]: check for check in snapshot.checks() if check.get("status") == "fail"}
    form = AcknowledgeForm(request.POST, failing=list(failing))
    acknowledged = set(form.cleaned_data["acknowledged"]) if form.is_valid() else set()
    unread = [failing[check_id].get("title", check_id) for check_id in failing if check_id not in acknowledged]
    if unread:
        messages.error(
            request,
            "This host has failing checks. Read the fix of each and tick \u201cI have read this fix\u201d before going on: "
            + "; ".join(unread)
            + ".",
        )
        return 1
    state.acknowledged = sorted(acknowledged)
    return 2


def _pick(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> int:
    form = PickForm(request.POST)
    address = form.cleaned_data["device"] if form.is_valid() else ""
    inventory = snapshots.inventory_of(snapshot)
    found = {candidate.function.address: candidate for candidate in candidates(inventory)[0]}
    candidate = found.get(address)
    if candidate is None:
        messages.error(request, "Pick one of the devices listed (the list comes from the latest snapshot).")
        return 2
    if not candidate.card.passable:
        messages.error(
            request, f"IOMMU group {candidate.card.id} cannot be passed through: " + " ".join(candidate.card.blocked)
        )
        return 2
    if state.device != address:
        state.device = address
        state.confirm = ""
        state.release_console = candidate.card.boot_gpu is not None
        state.persist = False
        state.plan_job = state.bind_job = state.persist_job = None
    plan = review(inventory, address, snapshot.readiness)
    if plan is not None and not plan.card.confirm_phrase and state.plan_job is None:
        _submit_plan(request, state, plan)
    return 3


def _submit_plan(request: HttpRequest, state: WizardState, plan: Review) -> None:
    """A plan_change job: the exact files binding at boot would write, for step 3 to show."""
    state.plan_job = run_job(
        request,
        host=state.host,
        action=Action.PLAN_CHANGE,
        targets=[function.address for function in plan.moves],
        parameters={
            "change": Action.PERSIST_BINDING,
            "native_drivers": plan.native_drivers,
            "confirm": state.confirm or None,
        },
    )


def _choose(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> int:
    inventory = snapshots.inventory_of(snapshot)
    plan = review(inventory, state.device, snapshot.readiness) if state.device else None
    if plan is None:
        messages.error(request, "Pick a device first: the one chosen is not in the latest snapshot.")
        return 2
    form = PlanForm(request.POST)
    form.is_valid()
    confirm = (form.cleaned_data.get("confirm") or "").strip()
    try:
        # The interlock the worker asks again, for the functions this plan moves.
        check_action(inventory, BIND, [function.address for function in plan.moves], confirm)
    except PassthroughError as error:
        messages.error(request, error_text(error))
        return 3
    changed = confirm != state.confirm
    state.confirm = confirm
    state.release_console = bool(form.cleaned_data.get("release_console"))
    state.persist = bool(form.cleaned_data.get("persist"))
    if state.persist and (state.plan_job is None or changed or state.plan_job.state == State.FAILED):
        _submit_plan(request, state, plan)
        messages.info(request, "Read the file changes for binding at boot below, then continue.")
        return 3
    return 4


def _apply(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> int:
    what = request.POST.get("do")
    if what == "bind":
        if state.bind_job is not None and not state.bind_job.is_finished:
            messages.info(request, f"Job {state.bind_job.pk} is still running.")
            return 4
        state.bind_job = run_job(
            request,
            host=state.host,
            action=Action.BIND_VFIO,
            targets=[state.device],
            parameters={"confirm": state.confirm or None, "release_console": state.release_console},
        )
        return 4
    if what == "persist":
        return _persist(request, state)
    if state.bind_job is None or state.bind_job.state != State.SUCCEEDED:
        messages.error(request, "Apply the binding first; step 5 needs the device on vfio-pci.")
        return 4
    return 5


def _persist(request: HttpRequest, state: WizardState) -> int:
    plan_job = state.plan_job
    plan = (plan_job.result or {}).get("plan") if plan_job else None
    if plan_job is None or plan is None:
        messages.error(request, "There is no plan for binding at boot to apply: go back to step 3 and ask for it.")
        return 4
    state.persist_job = run_job(
        request,
        host=state.host,
        action=Action.PERSIST_BINDING,
        targets=list(plan_job.targets),
        parameters={
            "native_drivers": plan_job.parameters.get("native_drivers"),
            "confirm": plan_job.parameters.get("confirm"),
            "fingerprint": plan.get("fingerprint"),
        },
    )
    return 4


def _give(request: HttpRequest, state: WizardState, snapshot: Snapshot) -> int:
    """Step 5's buttons: attach the device to the chosen VM, detach one a VM holds, define a new VM, or finish."""
    what = request.POST.get("do", "finish")
    if what == "finish":
        return _finish(request, state)
    if state.vm_job is not None and not state.vm_job.is_finished:
        messages.info(request, f"Job {state.vm_job.pk} is still running.")
        return 5
    vms = snapshot.vm_inventory
    reference = request.POST.get("vm", "")
    if what == "define":
        if not state.device:
            messages.error(request, "Pick a device first (step 2).")
            return 5
        form = NewVmForm(request.POST)
        if not form.is_valid():
            messages.error(request, "A new VM needs a name of letters, digits, '-', '_' or '.', memory and vCPUs.")
            return 5
        state.vm = f"libvirt:{form.cleaned_data['name']}"
        state.vm_job = run_job(
            request, host=state.host, action=Action.VM_DEFINE, targets=[state.device],
            parameters={key: form.cleaned_data[key] for key in ("name", "memory_mib", "vcpus")},
        )  # fmt: skip
        return 5
    vm = chosen_vm(vms, reference)
    if vm is None:
        messages.error(request, "Pick one of the VMs listed (the list comes from the latest snapshot).")
        return 5
    state.vm = vm.ref
    if what == "detach":
        address = request.POST.get("address", "")
        if vm.holds(address) is None:
            messages.error(request, f"{vm.name} does not hold {address or 'that device'} in the latest snapshot.")
            return 5
        state.vm_job = run_job(
            request, host=state.host, action=Action.VM_DETACH, targets=[address],
            parameters={"vm": vm.ref, "live": None},
        )  # fmt: skip
        return 5
    if not state.device:
        messages.error(request, "Pick a device first (step 2).")
        return 5
    options = options_form(request.POST, snapshots.inventory_of(snapshot), state.device)
    if options.refusal():
        messages.error(request, f"Nothing was attached: {options.refusal()}")
        return 5
    state.vm_job = run_job(
        request, host=state.host, action=Action.VM_ATTACH, targets=[state.device],
        parameters={"vm": vm.ref, "live": None, "confirm": state.confirm or None,
                    "fingerprint": request.POST.get("fingerprint") or None, **options.options()},
    )  # fmt: skip
    return 5


def _finish(request: HttpRequest, state: WizardState) -> int:
    form = TargetForm(request.POST)
    if form.is_valid():
        state.target = form.cleaned_data["target"]
    state.finished = timezone.now()
    messages.success(
        request, "The wizard is done. This page now shows the host at a glance; the wizard stays a click away."
    )
    return FINISHED


ACTIONS: dict[int, Action_] = {1: _acknowledge, 2: _pick, 3: _choose, 4: _apply, 5: _give}
