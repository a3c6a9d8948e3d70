"""boot_mode, bootloader, initramfs_tool, acs_override and kernel_cmdline."""

from __future__ import annotations

from passthrough.evidence import Evidence
from passthrough.readiness.check import Check
from passthrough.readiness.facts import HostFacts
from passthrough.readiness.iommu import off_switches

NO_BOOT_FILES = "The tree holds none of etc/, boot/, usr/, so the boot tooling cannot be told."


def check_boot_mode(facts: HostFacts) -> Check:
    tree, title = facts.tree, "Boot mode (UEFI or legacy BIOS)"
    if not tree.is_dir("sys"):
        return Check("boot_mode", title, "skip", "The tree has no sys/ to read.")
    if tree.is_dir("sys/firmware/efi"):
        return Check(
            "boot_mode", title, "pass", "The host booted through UEFI.", [Evidence("/sys/firmware/efi", "present")]
        )
    return Check(
        "boot_mode",
        title,
        "warn",
        "The host booted through legacy BIOS (CSM): the boot GPU's VBIOS was shadowed (copied and patched) at "
        "boot, so passing that GPU through may need a clean ROM file given to the VM (romfile=).",
        [Evidence("/sys/firmware/efi", "missing")],
        fix="Prefer passing through a GPU that is not the boot GPU, or dump its ROM from a second host or get it "
        "from the vendor and give it to the VM as romfile. Switching the firmware to UEFI boot (CSM off) also "
        "needs a UEFI boot loader installed.",
    )


def check_bootloader(facts: HostFacts) -> Check:
    title = "Boot loader"
    if not facts.has_boot_config:
        return Check("bootloader", title, "skip", NO_BOOT_FILES)
    loader = facts.bootloader
    if not loader.known:
        return Check(
            "bootloader",
            title,
            "warn",
            "No GRUB, systemd-boot, rEFInd or syslinux configuration was found, so kernel parameters cannot be "
            "planned for this host.",
            loader.evidence,
            fix="Add kernel parameters through whatever starts this kernel (a direct EFI stub entry, a hypervisor's "
            "kernel command line), then reboot.",
            plan=loader.to_json(),
        )
    files = ", ".join(f"/{relative}" for relative in loader.cmdline_files)
    apply = f"; `{loader.apply_command}` applies it" if loader.apply_command else ""
    if loader.managed_by == "kernelstub":
        apply = "; change it with `kernelstub -a`/`-d`, which rewrites the entries"
    return Check(
        "bootloader",
        title,
        "pass",
        f"{loader.label} on {loader.distro.label}: the kernel command line lives in {files}{apply}.",
        loader.evidence,
        plan=loader.to_json(),
    )


def check_initramfs_tool(facts: HostFacts) -> Check:
    title = "Initramfs generator"
    if not facts.has_boot_config:
        return Check("initramfs_tool", title, "skip", NO_BOOT_FILES)
    tool = facts.initramfs
    if not tool.known:
        return Check(
            "initramfs_tool",
            title,
            "warn",
            "No update-initramfs, dracut or mkinitcpio was found, so loading vfio-pci early cannot be planned.",
            tool.evidence,
            fix="Install your distribution's generator (initramfs-tools on Debian, Ubuntu and Proxmox VE; dracut on "
            "Fedora and RHEL; mkinitcpio on Arch). A host that boots without an initramfs needs vfio-pci built into "
            "its kernel to claim a device before that device's own driver.",
            plan=tool.to_json(),
        )
    return Check(
        "initramfs_tool",
        title,
        "pass",
        f"{tool.name}: modules for early load go in {tool.modules_file}, rebuilt with `{tool.rebuild_command}`.",
        tool.evidence,
        plan=tool.to_json(),
    )


def check_acs_override(facts: HostFacts) -> Check:
    title = "ACS override patch"
    cmdline = facts.cmdline
    if cmdline is None:
        return Check("acs_override", title, "skip", "The tree has no /proc/cmdline to read.")
    override = cmdline.find("pcie_acs_override")
    if not override:
        return Check(
            "acs_override",
            title,
            "pass",
            "No pcie_acs_override: IOMMU groups are as the hardware isolates them.",
            [Evidence("/proc/cmdline", "no pcie_acs_override")],
        )
    plan = facts.cmdline_plan([], ["pcie_acs_override"])
    return Check(
        "acs_override",
        title,
        "warn",
        f"{override[-1].raw} is set: groups split by the ACS override patch are not real isolation, and "
        "devices in them can still reach each other by peer-to-peer DMA.",
        [Evidence("/proc/cmdline", param.raw) for param in override],
        fix=f"Pass through only devices whose groups are isolated without the override. To see the real groups: "
        f"{plan.describe()}",
        plan=plan.to_json(),
    )


def check_kernel_cmdline(facts: HostFacts) -> Check:
    title = "Kernel command line"
    cmdline = facts.cmdline
    if cmdline is None or facts.cmdline_text is None:
        return Check("kernel_cmdline", title, "skip", "The tree has no /proc/cmdline to read.")
    notes = []
    for param in cmdline.find("vfio_pci.ids"):
        notes.append(f"{param.raw}: vfio-pci claims devices {param.value} at boot, before their own drivers.")
    if any(param.value == "efifb:off" for param in cmdline.find("video")):
        notes.append("video=efifb:off: the EFI framebuffer stays off the boot GPU, so that GPU can be passed through.")
    if any(param.value and "vfio" in param.value.replace("-", "_") for param in cmdline.find("rd.driver.pre")):
        notes.append("rd.driver.pre loads vfio-pci first thing in the initramfs (dracut).")
    # Each vendor's switch is read only by that vendor's IOMMU driver: say so only on the other vendor's host.
    # A virtual machine without an IOMMU unit has no vendor to go by: its hypervisor may emulate either
    # IOMMU whatever the CPU (a real kernel on an AMD CPU prints "DMAR: IOMMU enabled" for intel_iommu=on).
    vendor = None if facts.cpu and facts.cpu.is_virtual_machine and not facts.iommu_units else facts.vendor
    if vendor == "intel" and cmdline.has("amd_iommu"):
        notes.append("amd_iommu= has no effect on an Intel host.")
    elif cmdline.has("amd_iommu", "on"):
        notes.append(
            "amd_iommu=on is not a valid value and the kernel ignores it: the AMD IOMMU is on by default when the "
            "firmware enables it."
        )
    if vendor == "amd" and cmdline.has("intel_iommu"):
        notes.append("intel_iommu= has no effect on an AMD host.")
    if cmdline.init_args:
        notes.append(f"After '--' the kernel passes {' '.join(cmdline.init_args)} to init, not to itself.")
    evidence = [Evidence("/proc/cmdline", facts.cmdline_text)]
    conflicts = off_switches(facts) + [
        param for param in cmdline.params if param.key == "intremap" and "off" in param.options
    ]
    if not conflicts:
        words = len(cmdline.params)
        return Check(
            "kernel_cmdline",
            title,
            "pass",
            f"{words} kernel parameters, none in conflict with passthrough.",
            evidence,
            notes=notes,
        )
    specs = [f"{param.key}=off" for param in conflicts]
    add = ["intel_iommu=on"] if facts.vendor == "intel" and "intel_iommu=off" in specs else []
    plan = facts.cmdline_plan(add, [spec for spec in specs if not (add and spec == "intel_iommu=off")])
    return Check(
        "kernel_cmdline",
        title,
        "warn",
        f"The command line turns off what passthrough needs: {' '.join(param.raw for param in conflicts)}.",
        evidence,
        plan.describe(),
        plan.to_json(),
        notes,
    )
