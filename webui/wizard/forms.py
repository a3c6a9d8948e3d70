"""Forms: the filters (GET, so a filtered page has a URL) and the few choices a user posts."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.validators import MaxValueValidator

from passthrough.configgen import TARGETS
from passthrough.configgen.numa import AUTO, OFF, PINNING_TARGETS
from passthrough.configgen.spec import FIRMWARES, MACHINES
from passthrough.pci.model import Inventory
from passthrough.vms.romfile import MAX_PATH, ROM_DIRS, rom_path_problem, shown
from webui.accounts.events import AccountAction
from webui.audit import refusals
from webui.audit.models import RESULTS
from webui.jobs.models import Action, State
from webui.wizard.catalog import FILTER_KINDS


class GroupFilterForm(forms.Form):
    q = forms.CharField(
        required=False,
        max_length=100,
        label="Filter",
        widget=forms.TextInput(attrs={"placeholder": "address, name, driver, 10de:1d01…", "type": "search"}),
    )
    kind = forms.ChoiceField(required=False, choices=[("", "All kinds"), *FILTER_KINDS.items()])


class BindForm(forms.Form):
    """Passing a group through: the typed confirmation for host-critical members, the console."""

    confirm = forms.CharField(required=False, max_length=200)
    release_console = forms.BooleanField(required=False)


class ResetForm(forms.Form):
    """A reset: the kernel's choice (empty) or one of the methods offered (those the device lists
    that can work), and the typed confirmation when the interlock asks for one. ``described_by``:
    the id of the words saying why a listed method is left out."""

    method = forms.ChoiceField(required=False)
    confirm = forms.CharField(required=False, max_length=200)

    def __init__(self, *args: Any, methods: list[str], described_by: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["method"].choices = [("", "the kernel's choice"), *((method, method) for method in methods)]
        if described_by:
            self.fields["method"].widget.attrs["aria-describedby"] = described_by


class SriovForm(forms.Form):
    count = forms.IntegerField(min_value=0, label="Virtual functions")
    confirm = forms.CharField(required=False, max_length=200)

    def __init__(self, *args: Any, total: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["count"].max_value = total
        self.fields["count"].validators.append(MaxValueValidator(total))


def numa_pin_choices(inventory: Inventory) -> list[tuple[str, str]]:
    """Automatic, off, and each NUMA node of the host with its CPUs (the scan keeps only nodes that have some)."""
    nodes = sorted(inventory.numa_nodes.items())
    return [
        (AUTO, "automatic (the passed devices' node)"),
        (OFF, "off"),
        *((str(node), f"node {node} (CPUs {cpus})") for node, cpus in nodes),
    ]


class NumaPinForm(forms.Form):
    """Where QEMU, libvirt and Proxmox pin the VM; offered only on a host with several NUMA nodes
    (``multi_node``), where ``automatic`` is the node the passed devices sit on."""

    numa_pin = forms.ChoiceField(
        required=False,
        initial=AUTO,
        label="Pin to NUMA node",
        help_text="Where the vCPUs and memory run; another node than the devices' costs cross-socket traffic.",
        error_messages={
            "invalid_choice": "%(value)s is not a NUMA node of this host: choose automatic, off, or a node listed."
        },
    )

    def __init__(self, *args: Any, inventory: Inventory, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["numa_pin"].choices = numa_pin_choices(inventory)
        self.multi_node = len(inventory.numa_nodes) > 1

    def clean_numa_pin(self) -> str:
        return str(self.cleaned_data["numa_pin"] or AUTO)


class VmConfigForm(NumaPinForm):
    # The targets whose generator uses each option; the page shows an option only for those
    # (test_views_vmconfig checks this against the generators' text).
    OPTION_TARGETS = {
        "name": ("qemu", "libvirt", "proxmox", "vmware", "hyperv"),
        "firmware": ("qemu", "libvirt", "proxmox", "vmware", "hyperv"),
        "machine": ("qemu", "libvirt", "proxmox"),
        "primary_gpu": ("qemu", "libvirt", "proxmox"),
        "rom_file": ("qemu", "libvirt", "proxmox"),
        "memory_mib": ("qemu", "libvirt", "proxmox", "vmware", "hyperv"),
        "vcpus": ("qemu", "libvirt", "proxmox", "vmware", "hyperv"),
        "hugepages": ("qemu", "libvirt", "proxmox", "vmware"),
        "hide_kvm": ("qemu", "libvirt", "proxmox", "vmware"),
        "hv_vendor_id": ("qemu", "libvirt", "proxmox"),
    }

    devices = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        label="Devices",
        error_messages={"required": "Pick at least one device to pass through."},
    )
    target = forms.ChoiceField(choices=list(TARGETS.items()), initial="qemu", label="Hypervisor")
    name = forms.CharField(max_length=63, initial="passthrough-vm", label="VM name")
    firmware = forms.ChoiceField(
        choices=[(f, f.upper() if f == "ovmf" else f.title()) for f in FIRMWARES],
        initial="ovmf",
        help_text="OVMF is UEFI; most GPUs want it.",
    )
    machine = forms.ChoiceField(choices=[(m, m) for m in MACHINES], initial="q35")
    primary_gpu = forms.BooleanField(required=False, label="Primary GPU (x-vga): the guest boots on it")
    rom_file = forms.CharField(
        required=False,
        max_length=255,
        label="ROM file",
        help_text="An absolute path on the host, for a GPU whose own ROM is unusable.",
    )
    memory_mib = forms.IntegerField(min_value=256, max_value=16 * 1024 * 1024, initial=8192, label="Memory (MiB)")
    vcpus = forms.IntegerField(min_value=1, max_value=1024, initial=4, label="vCPUs")
    hugepages = forms.BooleanField(required=False, label="Back memory with hugepages")
    hide_kvm = forms.BooleanField(
        required=False, label="Hide the hypervisor from the guest (NVIDIA drivers before 465)"
    )
    hv_vendor_id = forms.CharField(required=False, max_length=12, label="Hyper-V vendor id")

    def __init__(self, *args: Any, inventory: Inventory, refused: dict[str, str] | None = None, **kwargs: Any) -> None:
        """``refused``: address -> why it may never go to a VM (offered disabled, refused if sent)."""
        super().__init__(*args, inventory=inventory, **kwargs)
        self.fields["devices"].choices = device_choices(inventory)
        self.refused = refused or {}

    def clean_devices(self) -> list[str]:
        devices: list[str] = self.cleaned_data["devices"]
        for address in devices:
            if address in self.refused:
                raise forms.ValidationError(f"{address} cannot go to a VM: {self.refused[address]}")
        return devices

    def option_fields(self) -> list[tuple[forms.BoundField, str, bool]]:
        """Each option, the targets that use it space-separated (the page hides it for the others),
        and whether it is a checkbox. NUMA pinning only on a host with several nodes (or to show
        why a value sent for it was refused)."""
        options = dict(self.OPTION_TARGETS)
        if self.multi_node or (self.is_bound and self["numa_pin"].errors):
            options["numa_pin"] = PINNING_TARGETS
        return [
            (self[name], " ".join(targets), isinstance(self.fields[name], forms.BooleanField))
            for name, targets in options.items()
        ]

    def spec_options(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "firmware": data["firmware"],
            "machine": data["machine"],
            "primary_gpu": data["primary_gpu"],
            "rom_file": data["rom_file"] or None,
            "memory_mib": data["memory_mib"],
            "vcpus": data["vcpus"],
            "hugepages": data["hugepages"],
            "hide_kvm": data["hide_kvm"],
            "hv_vendor_id": data["hv_vendor_id"] or None,
            "numa_pin": data["numa_pin"],
        }


def device_choices(inventory: Inventory) -> list[tuple[str, str]]:
    """Every function a VM can be given (bridges and host bridges stay with the host)."""
    return [
        (
            f.address,
            f"{f.address[5:] if f.address.startswith('0000:') else f.address} {f.label}"
            + (f" (group {f.iommu_group})" if f.iommu_group is not None else ""),
        )
        for f in inventory.devices
        if not f.is_bridge and not f.is_host_bridge
    ]


# Every action the audit log records, by the words the log and its filter use: the jobs', the
# accounts' (sign-ins, passwords, roles), and the worker's refused broker messages.
AUDIT_ACTIONS = [*Action.choices, *AccountAction.choices, (refusals.ACTION, "Refused broker message")]


class AuditFilterForm(forms.Form):
    host = forms.CharField(required=False, max_length=253)
    user = forms.CharField(required=False, max_length=150, help_text="who: a user name, worker, shell:root…")
    action = forms.ChoiceField(required=False, choices=[("", "Any action"), *AUDIT_ACTIONS])
    device = forms.CharField(required=False, max_length=64, help_text="a PCI address, e.g. 01:00.0")
    result = forms.ChoiceField(required=False, choices=[("", "Any result"), *RESULTS])
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From")
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("The start date is after the end date.")
        return data


class JobFilterForm(forms.Form):
    host = forms.CharField(required=False, max_length=253)
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *State.choices])
    action = forms.ChoiceField(required=False, choices=[("", "Any action"), *Action.choices])


class AcknowledgeForm(forms.Form):
    """Step 1: the failing checks whose fix the user says they have read."""

    acknowledged = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)

    def __init__(self, *args: Any, failing: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["acknowledged"].choices = [(check_id, check_id) for check_id in failing]


class PickForm(forms.Form):
    device = forms.CharField(max_length=64)


class PlanForm(forms.Form):
    release_console = forms.BooleanField(required=False)
    persist = forms.BooleanField(required=False)
    confirm = forms.CharField(required=False, max_length=200)


class TargetForm(forms.Form):
    target = forms.ChoiceField(choices=list(TARGETS.items()), initial="qemu", label="Hypervisor")


class NewVmForm(forms.Form):
    """Step 5's "new VM from this config": a libvirt domain the worker defines from the generated XML."""

    name = forms.RegexField(regex=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", initial="passthrough-vm", label="Name")
    memory_mib = forms.IntegerField(min_value=256, max_value=65535, initial=8192, label="Memory (MiB)")
    vcpus = forms.IntegerField(min_value=1, max_value=256, initial=4, label="vCPUs")


class AttachOptionsForm(forms.Form):
    """Step 5's options for giving a GPU to a VM: the preview is made with them and the attach job carries them.

    ``display``: the picked device's card is a display controller (class 03xx); only then is
    the primary GPU offered (a value sent for another card is dropped). The ROM path is
    checked here as written; the worker checks the file it names on the host."""

    primary_gpu = forms.BooleanField(
        required=False,
        label="Primary GPU: the VM's only display",
        help_text="The VM boots and shows its screen on this card, and gets no emulated display of its own "
        "(Proxmox writes x-vga=1); the host keeps no console on the card. A primary GPU is never hot-plugged: "
        "a running VM gets it at its next start.",
    )
    rom_file = forms.CharField(
        required=False,
        max_length=MAX_PATH,
        label="ROM file",
        help_text="A VBIOS image, for a card whose own ROM cannot be read or was changed by the host's boot "
        f"(the boot GPU). Only from {', '.join(ROM_DIRS)}; Proxmox reads it from /usr/share/kvm.",
        widget=forms.TextInput(attrs={"placeholder": "/usr/share/vgabios/gpu.rom"}),
    )

    def __init__(self, *args: Any, display: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.display = display

    def clean_primary_gpu(self) -> bool:
        return bool(self.cleaned_data["primary_gpu"]) and self.display

    def clean_rom_file(self) -> str | None:
        path = self.cleaned_data["rom_file"].strip() or None
        problem = rom_path_problem(path) if path is not None else None
        if problem is not None:
            raise forms.ValidationError(f"ROM file {shown(path)} {problem}.")
        return path

    def options(self) -> dict[str, Any]:
        """What the preview is made with and the job carries: defaults when the form is not valid."""
        if not self.is_valid():
            return {"primary_gpu": False, "rom_file": None}
        return {"primary_gpu": self.cleaned_data["primary_gpu"], "rom_file": self.cleaned_data["rom_file"]}

    def refusal(self) -> str | None:
        """The form's errors in one sentence, or None."""
        if not self.is_bound or self.is_valid():
            return None
        return " ".join(str(error) for errors in self.errors.values() for error in errors)
