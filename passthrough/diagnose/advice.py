"""The cause in words and the fix for this host, one function per finding id.

Each takes the finding (its device and what its lines said) and the host's
:class:`~passthrough.diagnose.context.HostContext`, and returns ``(cause, fix)``. A fix names
this host's boot loader and files through the same command-line plan the readiness checks
use, the functions of a group by address and name, and the AMD reset-bug family by the
device's id.
"""

from __future__ import annotations

from collections.abc import Callable

from passthrough.diagnose.context import HostContext
from passthrough.diagnose.finding import Finding
from passthrough.ops.reset import amd_reset_bug_family

VENDOR_RESET = "github.com/gnif/vendor-reset"
# Drivers that leave a group viable: vfio's own, pci-stub, and none at all.
VIABLE_DRIVERS = (None, "vfio-pci", "pci-stub")
FIRMWARE_SWITCH = {
    "intel": "enable VT-d (Intel Virtualization Technology for Directed I/O) in the firmware setup (UEFI/BIOS)",
    "amd": "enable the IOMMU (AMD-Vi; often 'IOMMU' under AMD CBS or NBIO Common Options) and SVM Mode in the "
    "firmware setup (UEFI/BIOS)",
    None: "enable the platform IOMMU (Intel VT-d or AMD-Vi) in the firmware setup (UEFI/BIOS)",
}
_ERRNO_WORDS = {"-22": "EINVAL", "-16": "EBUSY", "-19": "ENODEV", "-12": "ENOMEM", "-1": "EPERM"}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def bar_reserve_conflict(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    framebuffer = ctx.framebuffer
    cause = (
        "Another driver holds the memory of this BAR, so vfio-pci cannot map it for the VM: almost always the "
        "firmware framebuffer the host drew its boot console on (efifb, vesafb, simplefb or simpledrm), which "
        "sits in the boot GPU's memory; otherwise a host driver that was not unbound."
    )
    if framebuffer:
        cause += f" This host runs {framebuffer}."
    new_kernel = ctx.kernel_version is not None and ctx.kernel_version >= (5, 15)
    if framebuffer in ("simpledrm", "simplefb") or (framebuffer is None and new_kernel):
        param, why = "initcall_blacklist=sysfb_init", "keeps the kernel from creating the simple framebuffer"
    elif framebuffer == "vesafb":
        param, why = "video=vesafb:off", "keeps vesafb off the GPU"
    else:
        param, why = "video=efifb:off", "keeps efifb off the GPU"
    fix = (
        "Release the console before passing this GPU (the wizard's bind does: it unbinds the framebuffer and "
        f"the virtual consoles). To keep the host off the GPU from boot on ({param} {why}):\n"
        f"{ctx.change_cmdline([param])}"
    )
    return cause, fix


def rmrr_ineligible(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    cause = (
        "The firmware's DMAR table lists a Reserved Memory Region (RMRR) for this device: memory the firmware "
        "itself keeps using (HP ProLiant management, some Dell and Lenovo servers). Since Linux 3.17 the kernel "
        "refuses to give such a device to a VM, because the VM would own memory the firmware writes."
    )
    fix = (
        "No kernel parameter lifts this. What can be done: move the card to a slot the firmware does not "
        "reserve, or, on HP ProLiant Gen8/Gen9, exclude the slot from the shared-memory features with HP's "
        "conrep tool and power-cycle; or pass a different device. A kernel patched to relax RMRRs works on some "
        "machines but lets the VM corrupt memory the firmware uses: at your own risk."
    )
    return cause, fix


def no_iommu_group(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    cause = (
        "vfio hands a device over by its IOMMU group, and the kernel puts devices into groups only when an "
        "IOMMU (Intel VT-d or AMD-Vi) is on. No group means the IOMMU is off, absent, or turned off on the "
        "kernel command line."
    )
    function = ctx.function(finding.device)
    group = function.iommu_group if function is not None else None
    if group is not None:
        return cause, (
            f"{finding.device} is in IOMMU group {group} now: the log is from before the IOMMU was turned on. "
            "Start the VM again."
        )
    return cause, _iommu_on(ctx)


def _iommu_on(ctx: HostContext) -> str:
    firmware = FIRMWARE_SWITCH[ctx.vendor]
    if ctx.vendor == "intel" and not ctx.has_param("intel_iommu", "on"):
        return f"{ctx.change_cmdline(['intel_iommu=on'])}\nIf no IOMMU groups appear after the reboot, {firmware}."
    return f"{_sentence(firmware)}, then power the host off and on."


def group_not_viable(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    cause = (
        "vfio gives a VM whole IOMMU groups: every endpoint of the group must be on vfio-pci (or pci-stub, or no "
        "driver) before any of them can be opened. Bridges may stay on pcieport."
    )
    function = ctx.function(finding.device)
    number = finding.details.get("group")
    group = ctx.inventory.group_of(function.address) if function is not None else None
    if group is None and number is not None:
        group = ctx.inventory.group(int(number))
    if group is None:
        return cause, (
            f"Bind every endpoint of IOMMU group {number or '?'} to vfio-pci (see the Groups page), or move the "
            "device to a slot with a group of its own."
        )
    blocking = [
        address
        for address in group.endpoints
        if (member := ctx.function(address)) is not None and member.driver not in VIABLE_DRIVERS
    ]
    if not blocking:
        return cause, f"Every endpoint of IOMMU group {group.id} is on vfio-pci now; start the VM again."
    listed = "\n".join(f"    {ctx.describe(address)}" for address in blocking)
    return cause, (
        f"These functions of IOMMU group {group.id} are still on host drivers:\n{listed}\n"
        "Bind the whole group to vfio-pci (the wizard's bind moves them together), or if one of them is a device "
        "the host needs, move the card to another slot."
    )


def reset_d3cold(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    cause = (
        "The device did not answer after a reset or after leaving the D3cold power state: its config space "
        "reads as all ones. GPUs that cannot reset themselves (the AMD reset bug of Polaris, Vega and Navi 1x; "
        "some NVIDIA cards after runtime power management) stay in this state until the host is powered off."
    )
    function = ctx.function(finding.device)
    family = amd_reset_bug_family(function) if function else None
    d3cold = (
        "options vfio-pci disable_idle_d3=1 in /etc/modprobe.d/vfio.conf keeps vfio-pci from powering idle devices down"
    )
    if family:
        loaded = "is loaded" if ctx.module_loaded("vendor_reset") else "is not loaded"
        return cause, (
            f"{finding.device} is an AMD {family} GPU, one with the AMD reset bug. Install vendor-reset "
            f"({VENDOR_RESET}; vendor_reset {loaded} on this host), load it at boot, and check that "
            f"/sys/bus/pci/devices/{finding.device}/reset_method lists device_specific. Also {d3cold}. "
            "Power the host off and on to recover the GPU now."
        )
    return cause, (
        f"Power the host off and on (a reboot may not be enough) to recover the device. Then {d3cold}, and "
        "rebuild the initramfs if vfio-pci loads from it."
    )


def interrupt_remapping_off(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    cause = (
        "vfio_iommu_type1 refuses to assign devices when the IOMMU cannot remap interrupts: without it a guest "
        "can forge MSI writes that inject interrupts into the host."
    )
    switch = {
        "intel": "Enable VT-d and x2APIC in the firmware setup (some older chipsets have VT-d without interrupt "
        "remapping)",
        "amd": "Enable the IOMMU and x2APIC in the firmware setup (AMD-Vi remaps interrupts when the IVRS table "
        "allows it)",
        None: "Enable the IOMMU and x2APIC in the firmware setup",
    }[ctx.vendor]
    if ctx.has_param("intremap", "off"):
        switch = f"{ctx.change_cmdline([], ['intremap=off'])} {switch}"
    unsafe = ctx.change_cmdline(["vfio_iommu_type1.allow_unsafe_interrupts=1"])
    return cause, (
        f"{switch}. If the platform has no interrupt remapping, vfio can be told to assign devices anyway, "
        f"accepting that a guest could inject interrupts into the host: {unsafe}"
    )


def iommu_disabled_firmware(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    cause = (
        "The kernel was asked to use the IOMMU, but the firmware published no usable DMAR table (or a broken "
        "one), so no IOMMU unit and no IOMMU group exist: VT-d is switched off in the firmware or the board "
        "lacks it."
    )
    return cause, f"{_sentence(FIRMWARE_SWITCH[ctx.vendor])}, then power the host off and on."


def dmar_fault(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    who = ctx.describe(finding.device) if finding.device else "The device"
    cause = (
        f"{who} tried to read or write memory its IOMMU domain does not map, and the IOMMU blocked it. Once, "
        "while a VM starts or a driver changes, it is harmless; repeated, the device's driver or firmware "
        "uses addresses it was never given (broken firmware RMRRs, an integrated GPU under translation)."
    )
    function = ctx.function(finding.device)
    fix = "If the device is passed to a VM, make sure the VM has it whole (its IOMMU group) and restart the VM."
    if function is not None and function.driver not in ("vfio-pci", None):
        fix = (
            f"The host's own driver ({function.driver}) caused it. Put host devices in passthrough mode, so their "
            f"DMA is not translated: {ctx.change_cmdline(['iommu=pt'])}"
        )
    if function is not None and function.is_display and function.vendor_id == "8086" and ctx.vendor == "intel":
        fix += f"\nFor an Intel integrated GPU the host keeps, {ctx.change_cmdline(['intel_iommu=igfx_off'])}"
    return cause, fix


def vfio_probe_failed(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    errno = finding.details.get("errno", "")
    name = _ERRNO_WORDS.get(errno, errno)
    function = ctx.function(finding.device)
    if errno == "-22":
        cause = (
            f"vfio-pci refused the device ({name}): it is in no IOMMU group, which means the IOMMU is off or "
            "absent for it."
        )
        if function is not None and function.iommu_group is not None:
            return cause, f"{finding.device} is in IOMMU group {function.iommu_group} now; bind it again."
        return cause, _iommu_on(ctx)
    cause = f"vfio-pci's probe of the device failed with {name or 'an error'}."
    if errno == "-16":
        cause += " Another driver or a process still holds it."
    return cause, "The lines just before this one in the kernel log say why; bind again after fixing that."


def acs_override(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    cause = (
        "pcie_acs_override makes the kernel treat bridges and multifunction devices as if they isolated their "
        "functions (PCIe Access Control Services) when the hardware does not say so. The groups get smaller, "
        "but devices that used to share a group can still reach each other with peer-to-peer DMA that the "
        "IOMMU never sees: a VM's device may read or write another device's memory, the host's included."
    )
    keep = "Keep it only for a device you trust with the rest of its real group."
    plan = ctx.cmdline_plan([], ["pcie_acs_override"])
    if not plan.edits and not ctx.has_param("pcie_acs_override"):
        return cause, (
            f"{keep} Neither this host's running kernel nor its boot loader's files carry pcie_acs_override now: "
            "the log is from an earlier boot."
        )
    return cause, (
        f"{keep} To get the real isolation back, move the card to a slot wired to the CPU and:\n{plan.describe()}"
    )


def device_in_use(finding: Finding, ctx: HostContext) -> tuple[str, str]:
    holder = finding.details.get("domain")
    cause = (
        "A device can be in one VM at a time: its IOMMU group's /dev/vfio file is already open"
        + (f" (libvirt names domain {holder})" if holder else " by another running VM or process")
        + "."
    )
    group = finding.details.get("group")
    who = f"`fuser -v /dev/vfio/{group}`" if group else "`fuser -v /dev/vfio/*`"
    return cause, (
        f"Shut down the VM that has it ({who} names the process), or remove the device from one of the two "
        "VMs' configurations."
    )


ADVICE: dict[str, Callable[[Finding, HostContext], tuple[str, str]]] = {
    "bar_reserve_conflict": bar_reserve_conflict,
    "rmrr_ineligible": rmrr_ineligible,
    "no_iommu_group": no_iommu_group,
    "group_not_viable": group_not_viable,
    "reset_d3cold": reset_d3cold,
    "interrupt_remapping_off": interrupt_remapping_off,
    "iommu_disabled_firmware": iommu_disabled_firmware,
    "dmar_fault": dmar_fault,
    "vfio_probe_failed": vfio_probe_failed,
    "acs_override": acs_override,
    "device_in_use": device_in_use,
}
