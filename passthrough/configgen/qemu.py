"""A runnable ``sh`` script that starts QEMU with the devices passed through.

One QEMU option (with its value) per line, each token a :func:`~passthrough.configgen.safe.shell_word`,
joined by backslash continuations; ``"$@"`` at the end appends whatever the user adds
(a disk, a network card), so the script stays the single place the VM is defined.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from passthrough.configgen.hostcheck import comment_block
from passthrough.configgen.layout import GuestSlot, device_summary, guest_slots
from passthrough.configgen.safe import comment_lines, shell_word
from passthrough.configgen.spec import OVMF_CODE, OVMF_VARS, ConfigError, GeneratedConfig, HostRequirement, VmSpec

if TYPE_CHECKING:
    from passthrough.pci.model import Inventory

EMULATOR = "qemu-system-x86_64"
VARS_DIR = "/var/lib/passthrough-wizard"
FIRST_SLOT = 0x10  # clear of q35's ICH9 functions (0x1f) and i440fx's PIIX3 (0x01)
LAST_SLOT = 0x1E


def vars_path(spec: VmSpec) -> str:
    return f"{VARS_DIR}/{spec.name}_VARS.fd"


def arguments(spec: VmSpec) -> tuple[list[list[str]], dict[str, str]]:
    """QEMU's arguments as lines (an option and its value), with a note for each option that needs one."""
    notes: dict[str, str] = {}
    lines: list[list[str]] = [["-name", spec.name]]

    machine = "q35" if spec.machine == "q35" else "pc"
    machine_options = [machine, "accel=kvm"]
    if spec.hugepages:
        machine_options.append("memory-backend=ram0")
    lines.append(["-machine", ",".join(machine_options)])
    notes[f"-machine {machine}"] = (
        "q35 emulates a PCI Express chipset, so passed devices sit behind PCIe root ports as on real hardware; "
        "GPU drivers check the link. i440fx ('pc') has only a conventional PCI bus."
    )

    cpu = ["host"]
    if spec.hide_kvm:
        cpu.append("kvm=off")
        notes["kvm=off"] = (
            "Hides the KVM signature from the guest. NVIDIA GeForce drivers before 465 stop with error 43 when "
            "they see a hypervisor; newer drivers do not need it."
        )
    if spec.hv_vendor_id:
        # The vendor string lives in the Hyper-V CPUID leaves, which exist only with enlightenments on.
        cpu += ["hv_relaxed", "hv_vapic", "hv_spinlocks=0x1fff", f"hv_vendor_id={spec.hv_vendor_id}"]
        notes["hv_vendor_id"] = (
            "Replaces the Hyper-V vendor string 'Microsoft Hv' that Windows guests see with Hyper-V enlightenments "
            "(hv_relaxed, hv_vapic, hv_spinlocks, turned on with it); NVIDIA drivers before 465 check it."
        )
    lines.append(["-cpu", ",".join(cpu)])
    lines.append(["-smp", str(spec.vcpus)])
    lines.append(["-m", str(spec.memory_mib)])

    if spec.hugepages:
        lines.append(
            ["-object", f"memory-backend-file,id=ram0,size={spec.memory_mib}M,mem-path=/dev/hugepages,prealloc=on"]
        )
        notes["memory-backend-file"] = (
            "Guest RAM from /dev/hugepages, allocated up front: vfio pins all guest memory for DMA anyway, and huge "
            "pages make that pinning and the IOMMU mappings cheaper. Reserve them first (vm.nr_hugepages)."
        )

    if spec.firmware == "ovmf":
        lines.append(["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"])
        lines.append(["-drive", f"if=pflash,format=raw,unit=1,file={vars_path(spec)}"])
        notes["if=pflash"] = (
            f"UEFI firmware (OVMF): the read-only code from Debian's ovmf package and this VM's own copy of "
            f"{OVMF_VARS}, where the guest keeps its boot entries. Modern GPUs boot through their UEFI ROM."
        )

    primary = spec.primary
    if primary is not None:
        lines.append(["-vga", "none"])
        notes["-vga none"] = "No emulated display: the passed GPU is the guest's screen."
        if spec.firmware == "seabios":
            notes["x-vga=on"] = (
                "SeaBIOS boots through the legacy VGA ranges and the card's legacy VGA ROM; x-vga=on routes those "
                "ranges to the passed GPU. The host kernel needs CONFIG_VFIO_PCI_VGA (Debian has it)."
            )
        else:
            notes["x-vga"] = (
                "Not set under OVMF: UEFI drives the card through the GOP driver in its ROM and never touches the "
                "legacy VGA ranges, so x-vga=on is not needed (Proxmox drops it under OVMF too)."
            )

    slots = guest_slots(spec)
    if len(slots) > LAST_SLOT - FIRST_SLOT + 1:
        raise ConfigError(
            f"{len(slots)} physical devices do not fit in the {LAST_SLOT - FIRST_SLOT + 1} guest slots this layout uses.",
            hint="Pass fewer devices to one VM.",
        )
    number = 0
    for slot in slots:
        bus, slot_address = _placement(spec, slot, lines)
        for device, guest_function in slot.functions:
            options = [f"vfio-pci,host={device.address}", f"id=hostdev{number}", f"bus={bus}"]
            options.append(f"addr={slot_address}.{guest_function}" if slot.multifunction else f"addr={slot_address}")
            if slot.multifunction and guest_function == 0:
                options.append("multifunction=on")
            if device.x_vga and spec.firmware == "seabios":
                options.append("x-vga=on")
            if device.rom_file:
                options.append(f"romfile={device.rom_file}")
            if not device.rombar:
                options.append("rombar=0")
            lines.append(["-device", ",".join(options)])
            number += 1
    notes["vfio-pci"] = "Hands the host function to the guest through vfio; host= is its address on this machine."
    if any(slot.multifunction for slot in slots):
        notes["multifunction=on"] = (
            "The functions of one card share one guest slot with their function numbers, as on the real card; "
            "multifunction=on on function 0 tells the guest to look for the others."
        )
    if spec.uses_pcie:
        notes["pcie-root-port"] = (
            "One PCIe root port per passed device, so each sits on its own PCIe link the way it does in the host."
        )
    if any(device.rom_file for device in spec.devices):
        notes["romfile="] = (
            "The option ROM the guest runs instead of the card's own: a dumped or patched ROM for cards whose "
            "ROM is unusable after the host booted from them."
        )
    if any(not device.rombar for device in spec.devices):
        notes["rombar=0"] = "Hides the device's ROM BAR from the guest; some cards hang when the guest reads it."
    notes['"$@"'] = "Arguments given to this script are appended: add your disk, network and display there."
    return lines, notes


def _placement(spec: VmSpec, slot: GuestSlot, lines: list[list[str]]) -> tuple[str, str]:
    """(bus, addr) for a guest slot; on PCIe a root port is added for it first."""
    slot_number = FIRST_SLOT + slot.index
    if spec.uses_pcie:
        port = f"rp{slot.index}"
        lines.append(
            [
                "-device",
                f"pcie-root-port,id={port},bus=pcie.0,addr={slot_number:#x},chassis={slot.index + 1},port={slot_number:#x}",
            ]
        )
        return port, "0x0"
    return ("pcie.0" if spec.machine == "q35" else "pci.0"), f"{slot_number:#x}"


def render(lines: list[list[str]]) -> str:
    """``exec qemu ... \\`` with one quoted option per line, ending in ``"$@"``."""
    rendered = [f"exec {EMULATOR} \\"]
    rendered += [
        "  " + " ".join(shell_word(token, f"QEMU argument of {line[0]}") for token in line) + " \\" for line in lines
    ]
    rendered.append('  "$@"')
    return "\n".join(rendered)


def generate(inventory: Inventory, spec: VmSpec, requirements: list[HostRequirement]) -> GeneratedConfig:
    lines, notes = arguments(spec)
    header = [
        "#!/bin/sh",
        f"# {spec.name}: QEMU with PCI passthrough, generated by Passthrough Wizard.",
        f"# Run as root: sh {spec.name}.sh [more QEMU arguments, e.g. -drive file=disk.qcow2,if=virtio]",
        "#",
        "# Devices passed:",
        *comment_lines(device_summary(inventory, spec), "#   "),
        "#",
        *comment_lines(comment_block(requirements, inventory.root)),
        "",
        "set -e",
    ]
    if spec.firmware == "ovmf":
        vars_file = shell_word(vars_path(spec), "UEFI variable store")
        header.append("# This VM's own UEFI variable store, copied once from the template.")
        header.append(
            f"[ -e {vars_file} ] || {{ mkdir -p {shell_word(VARS_DIR, 'directory')} && "
            f"cp {shell_word(OVMF_VARS, 'OVMF template')} {vars_file}; }}"
        )
    text = "\n".join(header) + "\n" + render(lines) + "\n"
    return GeneratedConfig(
        target="qemu",
        text=text,
        filename=f"{spec.name}.sh",
        media_type="text/x-shellscript",
        notes=notes,
        host_requirements=requirements,
    )
