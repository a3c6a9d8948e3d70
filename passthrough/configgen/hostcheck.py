"""What the host needs for a generated config to work, checked against the inventory now.

Linux hypervisors (QEMU, libvirt, Proxmox VE) need the IOMMU on, viable groups and the
functions on vfio-pci. ESXi and Hyper-V would run on this same hardware instead of Linux:
from Linux we can still tell whether the firmware has the IOMMU on (Linux found one), but
not their own passthrough switches, so those are listed as "check" (met is None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from passthrough.configgen.spec import HostRequirement, VmSpec

if TYPE_CHECKING:
    from passthrough.pci.model import Inventory

LINUX_TARGETS = ("qemu", "libvirt", "proxmox")

# Who binds a function to vfio-pci at VM start, for the targets that do it themselves.
MANAGERS = {"libvirt": "libvirt (managed='yes')", "proxmox": "Proxmox"}

MARKS = {True: "[ok]     ", False: "[MISSING]", None: "[check]  "}


def iommu_on(inventory: Inventory, target: str) -> HostRequirement:
    if inventory.has_iommu_groups:
        return HostRequirement(
            "iommu",
            "The IOMMU is on (VT-d / AMD-Vi in the firmware and in the kernel).",
            True,
            f"{len(inventory.groups)} IOMMU groups under sys/kernel/iommu_groups.",
        )
    if target in LINUX_TARGETS:
        return HostRequirement(
            "iommu",
            "The IOMMU is on (VT-d / AMD-Vi in the firmware and in the kernel).",
            False,
            "sys/kernel/iommu_groups is empty: the kernel has no IOMMU active, so vfio-pci cannot take any device.",
        )
    return HostRequirement(
        "iommu",
        "VT-d / AMD-Vi is enabled in the firmware setup.",
        None,
        "Linux shows no IOMMU groups; that means the firmware or the Linux kernel has it off, and only the "
        "firmware setting matters to this hypervisor.",
    )


def requirements(inventory: Inventory, spec: VmSpec, target: str) -> list[HostRequirement]:
    found = [iommu_on(inventory, target)]
    if target in LINUX_TARGETS:
        found += _group_requirements(inventory, spec)
        found += _driver_requirements(inventory, spec, target)
        if spec.hugepages:
            pages = -(-spec.memory_mib // 2)
            found.append(
                HostRequirement(
                    "hugepages",
                    f"{spec.memory_mib} MiB of hugepages are reserved (vm.nr_hugepages >= {pages} with 2 MiB pages).",
                    None,
                    "The inventory does not read /proc/meminfo; check HugePages_Free there.",
                )
            )
        if spec.firmware == "ovmf" and target != "proxmox":
            found.append(
                HostRequirement(
                    "ovmf",
                    "OVMF firmware is installed (Debian package ovmf).",
                    None,
                    "Firmware files are not part of the inventory; `ls /usr/share/OVMF` shows them.",
                )
            )
        for device in spec.devices:
            if device.rom_file:
                found.append(
                    HostRequirement(
                        f"rom:{device.address}",
                        f"The ROM file {device.rom_file} for {device.address} exists on the host.",
                        None,
                        "Files outside sys/ and proc/ are not part of the inventory.",
                    )
                )
    elif target == "vmware":
        found.append(
            HostRequirement(
                "esxi-passthrough",
                "Each device is toggled for passthrough on the ESXi host, and ESXi was rebooted after.",
                None,
                "Set on the ESXi host (Host > Manage > Hardware > PCI Devices); Linux cannot see it.",
            )
        )
    elif target == "hyperv":
        found.append(
            HostRequirement(
                "dda",
                "The host runs Windows Server 2016 or later with Hyper-V (Discrete Device Assignment) and "
                "interrupt remapping on.",
                None,
                "Checked on Windows; survey-dda.ps1 from Microsoft's Virtualization-Documentation lists assignable devices.",
            )
        )
    return found


def _group_requirements(inventory: Inventory, spec: VmSpec) -> list[HostRequirement]:
    found = []
    seen: set[int] = set()
    for device in spec.devices:
        group = inventory.group_of(device.address)
        if group is None:
            if inventory.has_iommu_groups:
                found.append(
                    HostRequirement(
                        f"group:{device.address}",
                        f"{device.address} is in an IOMMU group.",
                        False,
                        f"{device.address} has no iommu_group link although the host has groups.",
                    )
                )
            continue
        if group.id in seen:
            continue
        seen.add(group.id)
        members = ", ".join(address[5:] if address.startswith("0000:") else address for address in group.devices)
        found.append(
            HostRequirement(
                f"group:{group.id}",
                f"IOMMU group {group.id} ({members}) can go to a VM.",
                group.viable,
                " ".join(group.reasons) or "No verdict recorded.",
            )
        )
    return found


def _driver_requirements(inventory: Inventory, spec: VmSpec, target: str) -> list[HostRequirement]:
    # libvirt (managed='yes') and Proxmox take a function from its host driver and bind it to
    # vfio-pci themselves when the VM starts, so a function not on vfio-pci yet is fine for them,
    # except a GPU that its host driver holds: that driver often fails to let go.
    manager = MANAGERS.get(target)
    found = []
    for device in spec.devices:
        function = inventory.device(device.address)
        driver = function.driver if function else None
        now = f"It is on {driver} now." if driver else "It has no driver now."
        bound = f"{device.address} is bound to vfio-pci."
        if driver == "vfio-pci":
            found.append(HostRequirement(f"vfio:{device.address}", bound, True, "It is on vfio-pci."))
        elif manager and driver and function is not None and function.is_display:
            found.append(
                HostRequirement(
                    f"vfio:{device.address}",
                    bound,
                    False,
                    f"{now} {manager} binds it to vfio-pci when the VM starts, but a GPU held by its host driver "
                    "often fails to let go: bind it to vfio-pci before starting the VM.",
                )
            )
        elif manager:
            found.append(
                HostRequirement(
                    f"vfio:{device.address}",
                    f"{manager} binds {device.address} to vfio-pci when the VM starts.",
                    True,
                    f"It is on {driver} now; {manager.split()[0]} unbinds it first." if driver else now,
                )
            )
        else:
            found.append(HostRequirement(f"vfio:{device.address}", bound, False, now))
    return found


def comment_block(requirements: list[HostRequirement], root: str) -> list[str]:
    """The requirement list as the lines of a comment, before the target's comment syntax.

    They quote the host (its path, driver names, pci.ids names in a group's reasons), so a
    generator writes them only through :mod:`passthrough.configgen.safe`.
    """
    ready = all(requirement.met is not False for requirement in requirements)
    lines = [
        f"Host requirements, read from the inventory of {root}:",
        f"  {'nothing is known to be missing' if ready else 'NOT READY: fix the MISSING lines first'}",
    ]
    for requirement in requirements:
        lines.append(f"  {MARKS[requirement.met]} {requirement.text}")
        lines.append(f"             {requirement.evidence}")
    return lines
