"""A runnable ``sh`` script that starts QEMU with the devices passed through.

One QEMU option (with its value) per line, each token a :func:`~passthrough.configgen.safe.shell_word`,
joined by backslash continuations; ``"$@"`` at the end appends whatever the user adds
(a disk, a network card), so the script stays the single place the VM is defined.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from passthrough.configgen.hostcheck import comment_block
from passthrough.configgen.layout import GuestSlot, device_summary, guest_slots
from passthrough.configgen.mmio import HOST_BRIDGES, OVMF_FW_CFG, unknown_note, window
from passthrough.configgen.numa import node_reason, warning_lines
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


def arguments(spec: VmSpec, inventory: Inventory | None = None) -> tuple[list[list[str]], dict[str, str]]:
    """QEMU's arguments as lines (an option and its value), with a note for each option that needs one.

    ``inventory`` only adds the note on unread BAR sizes of a GPU; the arguments do not depend on it.
    """
    notes: dict[str, str] = {}
    lines: list[list[str]] = [["-name", spec.name]]

    machine = "q35" if spec.machine == "q35" else "pc"
    machine_options = [machine, "accel=kvm"]
    if spec.hugepages or spec.numa_node is not None:
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

    numa = "" if spec.numa_node is None else f",host-nodes={spec.numa_node},policy=preferred"
    if spec.hugepages:
        lines.append(
            [
                "-object",
                f"memory-backend-file,id=ram0,size={spec.memory_mib}M,mem-path=/dev/hugepages,prealloc=on{numa}",
            ]
        )
        notes["memory-backend-file"] = (
            "Guest RAM from /dev/hugepages, allocated up front: vfio pins all guest memory for DMA anyway, and huge "
            "pages make that pinning and the IOMMU mappings cheaper. Reserve them first (vm.nr_hugepages)."
        )
    elif numa:
        lines.append(["-object", f"memory-backend-ram,id=ram0,size={spec.memory_mib}M{numa}"])
    _numa_notes(spec, notes)
    _mmio(inventory, spec, lines, notes)

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


def _numa_notes(spec: VmSpec, notes: dict[str, str]) -> None:
    if spec.numa_node is None:
        if spec.numa_why:
            notes["NUMA"] = spec.numa_why
        return
    notes["taskset -c"] = (
        f"Runs QEMU, its vCPU threads with it, only on the CPUs of NUMA node {spec.numa_node} ({spec.numa_cpus}), "
        + node_reason(spec)
    )
    notes["host-nodes="] = (
        f"Guest RAM from NUMA node {spec.numa_node} (policy=preferred: from the other nodes only once it runs out, so "
        "the VM still starts on a node short of memory)."
    )


def _mmio(inventory: Inventory | None, spec: VmSpec, lines: list[list[str]], notes: dict[str, str]) -> None:
    needed = window(spec)
    if needed is None:
        unread = unknown_note(inventory, spec) if inventory is not None else None
        if unread:
            notes["pci-hole64-size"] = unread
        return
    lines.append(["-global", f"{HOST_BRIDGES[spec.machine]}.pci-hole64-size={needed.qemu_size}"])
    notes["pci-hole64-size"] = f"QEMU's window for 64-bit BARs, on its host bridge: {needed.why}"
    if spec.firmware == "ovmf":
        lines.append(["-fw_cfg", f"name={OVMF_FW_CFG},string={needed.mib}"])
        notes["X-PciMmio64Mb"] = (
            f"Tells OVMF to make its 64-bit PCI window {needed.mib} MiB instead of its default; without it OVMF "
            "leaves a large BAR unassigned and the guest driver fails (Code 12 in Windows)."
        )


def launcher(spec: VmSpec) -> list[str]:
    """What runs QEMU: the emulator, behind ``taskset`` when the VM is pinned to a NUMA node."""
    return ["taskset", "-c", spec.numa_cpus, EMULATOR] if spec.numa_node is not None and spec.numa_cpus else [EMULATOR]


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


def render(lines: list[list[str]], command: list[str] | None = None) -> str:
    """``exec qemu ... \\`` with one quoted option per line, ending in ``"$@"``."""
    rendered = ["exec " + " ".join(shell_word(word, "QEMU launcher") for word in command or [EMULATOR]) + " \\"]
    rendered += [
        "  " + " ".join(shell_word(token, f"QEMU argument of {line[0]}") for token in line) + " \\" for line in lines
    ]
    rendered.append('  "$@"')
    return "\n".join(rendered)


def generate(inventory: Inventory, spec: VmSpec, requirements: list[HostRequirement]) -> GeneratedConfig:
    lines, notes = arguments(spec, inventory)
    warning = warning_lines(spec)
    header = [
        "#!/bin/sh",
        f"# {spec.name}: QEMU with PCI passthrough, generated by Passthrough Wizard.",
        f"# Run as root: sh {spec.name}.sh [more QEMU arguments, e.g. -drive file=disk.qcow2,if=virtio]",
        "#",
        "# Devices passed:",
        *comment_lines(device_summary(inventory, spec), "#   "),
        "#",
        *(comment_lines(warning) + ["#"] if warning else []),
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
    text = "\n".join(header) + "\n" + render(lines, launcher(spec)) + "\n"
    return GeneratedConfig(
        target="qemu",
        text=text,
        filename=f"{spec.name}.sh",
        media_type="text/x-shellscript",
        notes=notes,
        host_requirements=requirements,
    )
