"""One function in detail, and an IOMMU group passed through or given back (the list of groups is in groups.py).

Passing a group goes through its review first (a page, nothing happens yet): what moves,
what could go wrong, what the snapshot could not tell and how to undo it, the wizard's step
3 for one group (review.py). Only the review's form posts the bind. A refusal is said on
the page the user acted from, next to what they acted on (groups.note_at_group).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from passthrough.errors import PassthroughError
from passthrough.ops.console import released_by
from passthrough.ops.interlock import BIND, BUS_RESETS, RESET, SET_SRIOV_VFS, check_action, judge, never_reason, short
from passthrough.ops.reset import amd_reset_bug_family, bus_neighbours, bus_reset_obstacle
from passthrough.pci.model import Inventory, IommuGroup, PciFunction
from passthrough.topology.placement import placement
from webui.accounts.decorators import operator_required
from webui.hosts.models import Host, Snapshot
from webui.jobs.models import Action, Job
from webui.jobs.service import submit
from webui.wizard import snapshots
from webui.wizard.catalog import group_card
from webui.wizard.forms import BindForm, ResetForm, SriovForm
from webui.wizard.giveback import bind_job_of
from webui.wizard.review import review
from webui.wizard.views.common import error_text, get_host, host_page, parse_address_or_404, run_job
from webui.wizard.views.groups import note_at_group, take_note
from webui.wizard.views.jobs import previous_drivers


@require_GET
def device(request: HttpRequest, host: str, address: str) -> HttpResponse:
    context = host_page(get_host(request, host))
    wanted = parse_address_or_404(address)
    if context["snapshot"] is None:
        raise Http404(f"{context['host'].name} has no snapshot yet, so {wanted} cannot be shown.")
    inventory = snapshots.inventory_of(context["snapshot"])
    function = inventory.device(wanted)
    if function is None:
        raise Http404(f"There is no PCI function {wanted} on {context['host'].name} in its latest snapshot.")
    group = inventory.group_of(wanted)
    offered, left_out = reset_methods_offered(inventory, function)
    context.update(
        function=function,
        card=group_card(inventory, group) if group else None,
        critical=inventory.host_critical.get(wanted, []),
        companions=[inventory.device(a) for a in (group.companions if group else []) if inventory.device(a)],
        virtfns=[inventory.device(a) for a in function.virtfns if inventory.device(a)],
        physfn=inventory.device(function.physfn) if function.physfn else None,
        bridges=[inventory.device(a) for a in function.bridges if inventory.device(a)],
        reset_blocked=reset_blocked(inventory, function),
        # What the interlock asks before a reset or a VF change: the page says it, the worker asks again.
        reset_verdict=judge(inventory, RESET, [wanted]),
        reset_form=ResetForm(methods=offered, described_by="reset-left-out" if left_out else None),
        reset_left_out=left_out,
        sriov_verdict=judge(inventory, SET_SRIOV_VFS, [wanted]) if function.sriov_totalvfs else None,
        sriov_form=SriovForm(initial={"count": function.sriov_numvfs or 0}, total=function.sriov_totalvfs or 0),
        findings=findings_about(context["snapshot"], wanted),
        held_by=context["snapshot"].vm_inventory.holder(wanted),
        placement=placement(inventory, wanted),
        reset_bug=amd_reset_bug_family(function),
        reset_test=last_reset_test(context["host"], wanted),
        reset_test_blocked=reset_test_blocked(inventory, function),
    )
    return render(request, "hosts/device.html", context)


def last_reset_test(host: Host, address: str) -> Job | None:
    """The newest "Test the resets" job of ``address``: its result records each method's outcome."""
    jobs = Job.objects.filter(host=host, action=Action.TEST_RESET).order_by("-created")[:50]
    return next((job for job in jobs if job.targets[:1] == [address]), None)


def reset_test_blocked(inventory: Inventory, function: PciFunction) -> str | None:
    """Why the page offers no reset test (the worker checks again), or None."""
    blocked = reset_blocked(inventory, function)
    if blocked:
        return blocked
    if function.reset_methods is None:
        return "This kernel has no reset_method (it came with Linux 5.15), so its methods cannot be tried one by one."
    if function.driver != "vfio-pci":
        return "The test resets only a function bound to vfio-pci: pass its group through first."
    return None


def findings_about(snapshot: Snapshot, address: str) -> list[tuple[int, dict[str, Any]]]:
    """The Diagnose page's findings about ``address``, each with its number there (its anchor)."""
    findings = (snapshot.readiness.get("diagnosis") or {}).get("findings") or []
    return [(number, finding) for number, finding in enumerate(findings, 1) if finding.get("device") == address]


def reset_methods_offered(inventory: Inventory, function: PciFunction) -> tuple[list[str], str | None]:
    """The reset methods the page offers, and why a listed bus reset is left out (None when none is).

    ``reset_method`` can list ``bus`` for a function that shares its bus (the kernel fills the
    list in when the function appears, perhaps before its neighbours did), yet the kernel
    answers ENOTTY to a bus reset unless the function is alone on the bus behind its bridge:
    such a method is not offered, and the page says why.
    """
    listed = function.reset_methods or []
    bus = [method for method in listed if method in BUS_RESETS]
    obstacle = bus_reset_obstacle(inventory, function) if bus else None
    if obstacle is None:
        return listed, None
    named = " and ".join(bus)
    left_out = (
        f"{_capital(named)} {'is' if len(bus) == 1 else 'are'} not offered: the kernel refuses a bus reset of "
        f"{short(function.address)} (ENOTTY), because {obstacle}. It resets the bus behind a bridge only for a "
        f"device alone on it, even though reset_method lists {named}."
    )
    return [method for method in listed if method not in BUS_RESETS], left_out


def reset_blocked(inventory: Inventory, function: PciFunction) -> str | None:
    """Why the page offers no reset for this function (the worker checks again), or None.

    The interlock speaks first (the chipset and bridges), then the kernel's rule for bus
    resets (a function listing only bus resets that shares its bus cannot be reset at all),
    then the device's own state as the snapshot shows it.
    """
    verdict = judge(inventory, RESET, [function.address])
    if not verdict.allowed:
        return verdict.reason()
    blocked = _only_a_refused_bus_reset(inventory, function)
    if blocked:
        return blocked
    if function.driver not in (None, "vfio-pci"):
        return f"It is bound to {function.driver}: resetting a device under its host driver is unsafe. Bind it to vfio-pci first."
    if function.reset_methods == [] or (function.reset_methods is None and function.has_reset is False):
        return "The kernel lists no way to reset it."
    return None


def _only_a_refused_bus_reset(inventory: Inventory, function: PciFunction) -> str | None:
    """Why no reset can work when the function lists only bus resets and the kernel refuses them, or None."""
    listed = function.reset_methods or []
    offered, _ = reset_methods_offered(inventory, function)
    if not listed or offered:
        return None
    obstacle = bus_reset_obstacle(inventory, function)
    named = " and ".join(listed)
    only = f"{named} is the only method it lists" if len(listed) == 1 else f"it lists only {named}"
    text = (
        f"The kernel will refuse to reset it (ENOTTY): {only}, and {obstacle}. The kernel resets the bus behind "
        "a bridge only for a device alone on it."
    )
    others = bus_neighbours(inventory, function)
    kept = [other for other in others if other.address in inventory.host_critical or never_reason(other)]
    if kept:
        text += f" {', '.join(short(other.address) for other in kept)} must stay with the host, so this bus cannot be reset while the host runs."
    elif others and function.parent is not None:
        text += (
            f" Give it to a VM together with {', '.join(short(other.address) for other in others)} (all on vfio-pci): "
            "QEMU resets the whole bus through vfio-pci when one VM holds every function on it."
        )
    return text


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _function_or_404(host: Host, address: str) -> tuple[Inventory, PciFunction]:
    wanted = parse_address_or_404(address)
    snapshot = snapshots.latest(host)
    inventory = snapshots.inventory_of(snapshot) if snapshot else None
    function = inventory.device(wanted) if inventory else None
    if inventory is None or function is None:
        raise Http404(f"There is no PCI function {wanted} on {host.name} in its latest snapshot.")
    return inventory, function


def _refusal(
    inventory: Inventory, action: str, function: PciFunction, confirm: str, method: str | None = None
) -> str | None:
    """The interlock's refusal in words, or None when the action may be queued."""
    try:
        check_action(inventory, action, [function.address], confirm, method=method)
    except PassthroughError as error:
        return error_text(error)
    return None


@require_POST
@operator_required
def reset_device(request: HttpRequest, host: str, address: str) -> HttpResponse:
    found = get_host(request, host)
    inventory, function = _function_or_404(found, address)
    back = reverse("device", kwargs={"host": found.name, "address": function.address})
    if request.POST.get("test"):  # "Test the resets": every method in turn, posted beside the reset form
        return _test_resets(request, found, inventory, function, back)
    offered, left_out = reset_methods_offered(inventory, function)
    form = ResetForm(request.POST, methods=offered)
    blocked = reset_blocked(inventory, function)
    if blocked or not form.is_valid():
        reason = blocked or "Pick one of the reset methods the device lists, or the kernel's choice."
        if not blocked and left_out and request.POST.get("method") in BUS_RESETS:
            reason = left_out
        messages.error(request, f"{function.address} was not reset: {reason}")
        return redirect(back)
    method = form.cleaned_data["method"] or None
    confirm = form.cleaned_data["confirm"].strip()
    refused = _refusal(inventory, RESET, function, confirm, method)
    if refused:
        messages.error(request, f"{function.address} was not reset: {refused}")
        return redirect(back)
    parameters = {"method": method, "confirm": confirm or None}
    job = run_job(request, host=found, action="reset", targets=[function.address], parameters=parameters)
    return redirect("job", pk=job.pk) if job else redirect(back)


def _test_resets(
    request: HttpRequest, host: Host, inventory: Inventory, function: PciFunction, back: str
) -> HttpResponse:
    blocked = reset_test_blocked(inventory, function)
    confirm = request.POST.get("confirm", "").strip()[:200]
    refused = blocked or _refusal(inventory, RESET, function, confirm)
    if refused:
        messages.error(request, f"The resets of {function.address} were not tested: {refused}")
        return redirect(back)
    parameters = {"confirm": confirm or None}
    job = run_job(request, host=host, action=Action.TEST_RESET, targets=[function.address], parameters=parameters)
    return redirect("job", pk=job.pk) if job else redirect(back)


@require_POST
@operator_required
def set_vfs(request: HttpRequest, host: str, address: str) -> HttpResponse:
    found = get_host(request, host)
    inventory, function = _function_or_404(found, address)
    back = reverse("device", kwargs={"host": found.name, "address": function.address})
    if not function.sriov_totalvfs:
        messages.error(
            request, f"{function.address} is not an SR-IOV physical function: it has no virtual functions to set."
        )
        return redirect(back)
    form = SriovForm(request.POST, total=function.sriov_totalvfs)
    if not form.is_valid():
        messages.error(request, f"Give a number of virtual functions from 0 to {function.sriov_totalvfs}.")
        return redirect(back)
    count, confirm = form.cleaned_data["count"], form.cleaned_data["confirm"].strip()
    refused = _refusal(inventory, SET_SRIOV_VFS, function, confirm)
    if refused:
        messages.error(request, f"The VF count of {function.address} was not changed: {refused}")
        return redirect(back)
    parameters = {"count": count, "confirm": confirm or None}
    job = run_job(request, host=found, action="set_sriov_vfs", targets=[function.address], parameters=parameters)
    return redirect("job", pk=job.pk) if job else redirect(back)


def _group_or_404(host: Host, group: int, snapshot: Snapshot | None) -> tuple[Inventory, IommuGroup]:
    inventory = snapshots.inventory_of(snapshot) if snapshot else None
    iommu_group = inventory.group(group) if inventory else None
    if inventory is None or iommu_group is None:
        raise Http404(f"IOMMU group {group} is not in the latest snapshot of {host.name}.")
    return inventory, iommu_group


def _submit_for_group(request: HttpRequest, host: Host, group: int, doing: str, **job: Any) -> Job | None:
    """Submit a job for a group; a refusal (busy group, queue down) is said next to the group."""
    try:
        return submit(host=host, user=request.user, **job)
    except PassthroughError as error:
        note_at_group(request, host, group, f"IOMMU group {group} was not {doing}: {error_text(error)}")
        return None


@require_GET
def review_group(request: HttpRequest, host: str, group: int) -> HttpResponse:
    """What passing a group through would do, on this host: the page "Pass through this group" leads to."""
    context = host_page(get_host(request, host))
    found = context["host"]
    inventory, iommu_group = _group_or_404(found, group, context["snapshot"])
    card = group_card(inventory, iommu_group)
    first = card.first_endpoint
    plan = review(inventory, first, context["snapshot"].readiness) if first and not card.nothing_to_pass else None
    note = take_note(request, found, group)
    context.update(card=card, review=plan, note=note[1] if note else None)
    return render(request, "hosts/group_review.html", context)


@require_POST
@operator_required
def bind_group(request: HttpRequest, host: str, group: int) -> HttpResponse:
    """The review's "Pass through": checked against the snapshot here, again by the worker before it acts."""
    found = get_host(request, host)
    back = reverse("review_group", kwargs={"host": found.name, "group": group}) + "#decide"
    inventory, iommu_group = _group_or_404(found, group, snapshots.latest(found))
    card = group_card(inventory, iommu_group)
    form = BindForm(request.POST)
    form.is_valid()
    confirm = (form.cleaned_data.get("confirm") or "").strip()
    # card.blocked is the interlock's answer for this group, as the review showed it.
    if not card.passable:
        note_at_group(request, found, group, f"IOMMU group {group} cannot be passed through: {' '.join(card.blocked)}")
        return redirect(back)
    try:
        check_action(inventory, BIND, iommu_group.endpoints, confirm)
    except PassthroughError as error:
        note_at_group(request, found, group, f"IOMMU group {group} was not passed through: {error_text(error)}")
        return redirect(back)
    job = _submit_for_group(
        request,
        found,
        group,
        "passed through",
        action=Action.BIND_VFIO,
        targets=[card.first_endpoint or ""],
        parameters={"confirm": confirm or None, "release_console": bool(form.cleaned_data.get("release_console"))},
    )
    return redirect("job", pk=job.pk) if job else redirect(back)


@require_POST
@operator_required
def give_back_group(request: HttpRequest, host: str, group: int) -> HttpResponse:
    """ "Give back to the host" on the devices and device pages: a restore_driver job, as from the bind job's page.

    The drivers each function goes back to are the ones its bind job recorded; a group bound
    another way (at boot, by hand) gets what the kernel probes.
    """
    found = get_host(request, host)
    back = reverse("groups", kwargs={"host": found.name}) + f"#group-{group}"
    inventory, iommu_group = _group_or_404(found, group, snapshots.latest(found))
    on_vfio = group_card(inventory, iommu_group).vfio_functions
    if not on_vfio:
        note_at_group(
            request, found, group, f"Nothing to give back: no function of IOMMU group {group} is on vfio-pci."
        )
        return redirect(back)
    job = _submit_for_group(
        request,
        found,
        group,
        "given back",
        action=Action.RESTORE_DRIVER,
        targets=[on_vfio[0].address],
        parameters=_restore_parameters(bind_job_of(found, group)),
    )
    return redirect("job", pk=job.pk) if job else redirect(back)


def _restore_parameters(bind: Job | None) -> dict[str, Any]:
    """What the bind job recorded, as its own page's "Give back to the host" sends it (views/jobs.py give_back):
    the drivers before, and the consoles it released. Without a bind job, nothing: the kernel probes."""
    if bind is None:
        return {"previous_drivers": None}
    parameters: dict[str, Any] = {"previous_drivers": previous_drivers(bind) or None}
    result = bind.result or {}
    released = released_by(result.get("state_before"), result.get("state_after"))
    if released:
        parameters["released_console"] = released
    return parameters
