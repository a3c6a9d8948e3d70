"""VM configuration: pick devices, a hypervisor and options; read, copy or download the result.

A GET form, so a configuration has a URL (the download link is the same query). BAR
sizes are not read here (that would touch the hardware); the generators fall back to
their documented defaults and say so in their notes.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from passthrough.configgen import GeneratedConfig, VmSpec, build_spec, generate
from passthrough.configgen.numa import PINNING_TARGETS
from passthrough.errors import PassthroughError
from passthrough.pci.model import Inventory
from webui.wizard import picker, snapshots
from webui.wizard.forms import VmConfigForm
from webui.wizard.views.common import error_text, get_host, host_page


def make_config(inventory: Inventory, form: VmConfigForm) -> tuple[VmSpec, GeneratedConfig] | str:
    """The spec and the generated text, or what was wrong in words."""
    try:
        spec = build_spec(inventory, form.cleaned_data["devices"], **form.spec_options())
        return spec, generate(inventory, spec, form.cleaned_data["target"])
    except PassthroughError as error:
        return error_text(error)


def output_context(inventory: Inventory, spec: VmSpec, config: GeneratedConfig) -> dict[str, Any]:
    """What hosts/_config_output.html shows: the config, what was added and why, a NUMA warning."""
    return {
        "spec": spec,
        "config": config,
        "added": [(device, inventory.device(device.address)) for device in spec.devices if not device.picked],
        "numa_warning": spec.numa_warning if config.target in PINNING_TARGETS else None,
    }


def _form(request: HttpRequest, inventory: Inventory, choices: list[picker.Choice]) -> VmConfigForm:
    # The submit button always sends the target, so a form sent with no device picked is
    # bound (and says so) rather than shown again blank; ?pick= only preselects.
    bound = "target" in request.GET or "devices" in request.GET
    initial_devices = request.GET.getlist("pick")  # preselected from a device or group page
    return VmConfigForm(
        request.GET if bound else None,
        inventory=inventory,
        refused=picker.refused(choices),
        initial={"devices": initial_devices},
    )


@require_GET
def vmconfig(request: HttpRequest, host: str) -> HttpResponse:
    context: dict[str, Any] = host_page(get_host(request, host))
    if context["snapshot"] is not None:
        prepared = snapshots.prepared(context["snapshot"])
        inventory = prepared.inventory
        choices = picker.device_choices(inventory, prepared.cards)
        form = _form(request, inventory, choices)
        context.update(
            form=form,
            offered=[choice for choice in choices if not choice.refused],
            refused_groups=picker.refused_groups(choices),
            picked=set(form["devices"].value() or []),
        )
        if form.is_bound and form.is_valid():
            made = make_config(inventory, form)
            if isinstance(made, str):
                context["error"] = made
            else:
                context.update(output_context(inventory, *made))
                context["download"] = f"{reverse('vmconfig_download', kwargs={'host': host})}?{request.GET.urlencode()}"
    return render(request, "hosts/vmconfig.html", context)


@require_GET
def download(request: HttpRequest, host: str) -> HttpResponse:
    found = get_host(request, host)
    snapshot = snapshots.latest(found)
    if snapshot is None:
        raise Http404(f"{found.name} has no snapshot yet.")
    prepared = snapshots.prepared(snapshot)
    inventory = prepared.inventory
    form = VmConfigForm(
        request.GET, inventory=inventory, refused=picker.refused(picker.device_choices(inventory, prepared.cards))
    )
    if not form.is_valid():
        errors = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in form.errors.items())
        return HttpResponse(f"The configuration cannot be made: {errors}\n", status=400, content_type="text/plain")
    made = make_config(inventory, form)
    if isinstance(made, str):
        return HttpResponse(made + "\n", status=400, content_type="text/plain")
    config = made[1]
    response = HttpResponse(config.text, content_type=config.media_type)
    response["Content-Disposition"] = f'attachment; filename="{config.filename}"'
    return response
