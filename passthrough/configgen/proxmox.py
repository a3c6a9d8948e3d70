"""A Proxmox VE VM config (``/etc/pve/qemu-server/<vmid>.conf``) in Proxmox's own option names.

Proxmox builds the QEMU command from ``hostpciN:`` lines itself (qemu-server's
``PVE::QemuServer::PCI``): ``host`` names a whole device as ``bb:dd`` (every function, one
guest slot, multifunction) or one function as ``bb:dd.f``; ``pcie=1`` puts it behind a
PCIe root port and needs ``machine: q35``; ``x-vga=1`` makes it the primary GPU (and hides
KVM); ``rombar``/``romfile`` as in QEMU, the ROM being a file name under /usr/share/kvm.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from passthrough.configgen.hostcheck import comment_block
from passthrough.configgen.layout import GuestSlot, device_summary, guest_slots
from passthrough.configgen.mmio import HOST_BRIDGES, OVMF_FW_CFG, unknown_note, window
from passthrough.configgen.numa import node_reason, warning_lines
from passthrough.configgen.safe import comment_lines, exact_value
from passthrough.configgen.spec import ConfigError, GeneratedConfig, HostRequirement, VmSpec

if TYPE_CHECKING:
    from passthrough.pci.model import Inventory

MAX_HOSTPCI = 16  # qemu-server's $MAX_HOSTPCI_DEVICES
ROM_DIR = "/usr/share/kvm"


def setting(key: str, value: object) -> str:
    """One ``key: value`` line; every setting is written here, so none can hold a line break."""
    return f"{key}: {exact_value(str(value), f'Proxmox setting {key}')}"


def host_value(inventory: Inventory, slot: GuestSlot) -> str:
    """``01:00`` when every function of the device goes, else ``01:00.0`` (or a ``;`` list)."""
    first = slot.devices[0].pci_address
    prefix = "" if first.domain == 0 else f"{first.domain:04x}:"
    on_host = [function for function in inventory.devices if function.pci_address.slot_key == first.slot_key]
    passed = {device.address for device in slot.devices}
    if slot.multifunction and {function.address for function in on_host} == passed:
        # bb:dd is every function in the slot; VFs never share a guest slot, so never reach here.
        return f"{prefix}{first.bus:02x}:{first.slot:02x}"
    # Proxmox numbers the functions of a ';' list 0, 1, ... in the guest, in list order.
    return ";".join(
        f"{prefix}{device.pci_address.bus:02x}:{device.pci_address.slot:02x}.{device.pci_address.function}"
        for device in slot.devices
    )


def hostpci_lines(inventory: Inventory, spec: VmSpec) -> tuple[list[str], dict[str, str]]:
    notes: dict[str, str] = {}
    slots = guest_slots(spec)
    if len(slots) > MAX_HOSTPCI:
        raise ConfigError(
            f"{len(slots)} physical devices need {len(slots)} hostpci entries; Proxmox allows {MAX_HOSTPCI}.",
            hint="Pass fewer devices to one VM.",
        )
    lines = []
    for index, slot in enumerate(slots):
        if index == 0 and spec.proxmox_mapping:
            options = [f"mapping={spec.proxmox_mapping}"]
            notes["mapping="] = (
                f"The cluster resource mapping {spec.proxmox_mapping!r} (Datacenter > Resource Mappings) names the "
                f"device on each node instead of a host address, so the VM can move between nodes. It must map "
                f"{host_value(inventory, slot)} on this node."
            )
        else:
            options = [host_value(inventory, slot)]
        if spec.uses_pcie:
            options.append("pcie=1")
        if any(device.x_vga for device in slot.devices):
            options.append("x-vga=1")
        rom = next((device for device in slot.devices if device.rom_file or not device.rombar), None)
        if rom is not None and not rom.rombar:
            options.append("rombar=0")
        if rom is not None and rom.rom_file:
            options.append(f"romfile={posixpath.basename(rom.rom_file)}")
            notes["romfile="] = (
                f"Proxmox reads ROM files from {ROM_DIR} only: copy {rom.rom_file} to "
                f"{ROM_DIR}/{posixpath.basename(rom.rom_file)}."
            )
        lines.append(setting(f"hostpci{index}", ",".join(options)))
    notes["hostpciN"] = (
        "One entry per physical device. bb:dd passes every function of the device on one guest slot "
        "(multifunction); bb:dd.f passes one function."
    )
    if spec.uses_pcie:
        notes["pcie=1"] = "Behind a PCIe root port, as on real hardware; GPU drivers check the link. Needs q35."
    if spec.primary is not None:
        notes["x-vga=1"] = (
            "Primary GPU: Proxmox sets the emulated display to none and hides KVM from the guest; under SeaBIOS "
            "it adds QEMU's x-vga=on, under OVMF it leaves it out because UEFI does not use legacy VGA."
        )
    if any(not device.rombar for device in spec.devices):
        notes["rombar=0"] = "Hides the device's ROM BAR from the guest; some cards hang when it is read."
    return lines, notes


def _numa_lines(spec: VmSpec, notes: dict[str, str]) -> list[str]:
    """``numa: 1``, one guest node bound to the devices' host node, and ``affinity`` to its CPUs."""
    if spec.numa_node is None or spec.numa_cpus is None:
        if spec.numa_why:
            notes["NUMA"] = spec.numa_why
        return []
    guest_cpus = "0" if spec.vcpus == 1 else f"0-{spec.vcpus - 1}"
    notes["numa0:"] = (
        f"numa: 1 gives the guest a NUMA topology; numa0 puts all {spec.vcpus} vCPUs and {spec.memory_mib} MiB in one "
        f"guest node whose memory comes from host node {spec.numa_node} (hostnodes; policy=preferred takes it from "
        "other nodes only once that node runs out, so the VM still starts)."
    )
    notes["affinity:"] = (
        f"Runs the VM's QEMU process on the CPUs of NUMA node {spec.numa_node} ({spec.numa_cpus}), "
        + node_reason(spec)
        + " The affinity option needs Proxmox VE 7.3 or later."
    )
    return [
        setting("numa", 1),
        setting(
            "numa0",
            f"cpus={guest_cpus},hostnodes={spec.numa_node},memory={spec.memory_mib},policy=preferred",
        ),
        setting("affinity", spec.numa_cpus),
    ]


def _args_line(inventory: Inventory, spec: VmSpec, notes: dict[str, str]) -> list[str]:
    """Proxmox has no option for the 64-bit MMIO window, so it goes to QEMU through ``args:``."""
    needed = window(spec)
    if needed is None:
        unread = unknown_note(inventory, spec)
        if unread:
            notes["args:"] = unread + " On Proxmox both go on an args: line."
        return []
    words = ["-global", f"{HOST_BRIDGES[spec.machine]}.pci-hole64-size={needed.qemu_size}"]
    if spec.firmware == "ovmf":
        words += ["-fw_cfg", f"name={OVMF_FW_CFG},string={needed.mib}"]
    notes["args:"] = (
        "Extra QEMU arguments, as Proxmox has no option for the guest's 64-bit MMIO window: pci-hole64-size sizes "
        "QEMU's window on its host bridge"
        + (f" and {OVMF_FW_CFG} tells OVMF to use {needed.mib} MiB" if spec.firmware == "ovmf" else "")
        + f". {needed.why} Only root@pam may set args (qm set or editing the file)."
    )
    return [setting("args", " ".join(words))]


def generate(inventory: Inventory, spec: VmSpec, requirements: list[HostRequirement]) -> GeneratedConfig:
    hostpci, notes = hostpci_lines(inventory, spec)
    warning = warning_lines(spec)
    # Proxmox keeps '#' lines as the VM's Notes, so this header shows up in the web UI too.
    lines = [
        f"# {spec.name}: PCI passthrough, generated by Passthrough Wizard.",
        "# Save as /etc/pve/qemu-server/<VMID>.conf for a new VMID, then add a disk in the web UI.",
        "#",
        "# Devices passed:",
        *comment_lines(device_summary(inventory, spec), "#   "),
        "#",
        *(comment_lines(warning) + ["#"] if warning else []),
        *comment_lines(comment_block(requirements, inventory.root)),
    ]
    if spec.firmware == "ovmf":
        lines.append("# OVMF keeps its UEFI variables on an EFI disk; create it with")
        lines.append("#   qm set <VMID> --efidisk0 local-lvm:1,efitype=4m,pre-enrolled-keys=0")
        notes["efidisk0"] = "OVMF needs a small disk for its UEFI variables; `qm set` creates it on your storage."
    lines += [
        setting("name", spec.name),
        setting("memory", spec.memory_mib),
        setting("sockets", 1),
        setting("cores", spec.vcpus),
    ]
    cpu = ["host"]
    if spec.hide_kvm:
        cpu.append("hidden=1")
        notes["hidden=1"] = "Hides KVM from the guest (QEMU's kvm=off); NVIDIA GeForce drivers before 465 need it."
    if spec.hv_vendor_id:
        cpu.append(f"hv-vendor-id={spec.hv_vendor_id}")
        notes["hv-vendor-id="] = (
            "The Hyper-V vendor string the guest sees instead of 'Microsoft Hv'; Proxmox turns the Hyper-V "
            "enlightenments that carry it on for Windows guests (ostype win10/win11)."
        )
    lines.append(setting("cpu", ",".join(cpu)))
    lines += _numa_lines(spec, notes)
    if spec.machine == "q35":
        lines.append(setting("machine", "q35"))
        notes["machine: q35"] = "The PCI Express chipset; pcie=1 needs it. Proxmox's default is i440fx."
    if spec.firmware == "ovmf":
        lines.append(setting("bios", "ovmf"))
        notes["bios: ovmf"] = "UEFI firmware; modern GPUs boot through their UEFI ROM. Proxmox's default is SeaBIOS."
    if spec.hugepages:
        lines.append(setting("hugepages", 2))
        notes["hugepages: 2"] = (
            "Guest RAM from 2 MiB huge pages, which make vfio's pinning cheaper; reserve them first (vm.nr_hugepages)."
        )
    if spec.primary is not None:
        lines.append(setting("vga", "none"))
        notes["vga: none"] = "No emulated display: the passed GPU is the guest's screen."
    lines += _args_line(inventory, spec, notes)
    lines += hostpci
    return GeneratedConfig(
        target="proxmox",
        text="\n".join(lines) + "\n",
        filename=f"{spec.name}.conf",
        media_type="text/plain",
        notes=notes,
        host_requirements=requirements,
    )
