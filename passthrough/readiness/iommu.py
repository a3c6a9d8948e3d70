"""iommu, interrupt_remapping and iommu_passthrough_mode.

An IOMMU is on when the kernel registered IOMMU units (``/sys/class/iommu``: ``dmarN`` for
Intel VT-d, ``ivhdN`` for AMD-Vi) AND put devices into groups (``/sys/kernel/iommu_groups``).
Neither the command line nor the kernel log proves it: ``DMAR: IOMMU enabled`` is printed
for ``intel_iommu=on`` even on a board whose firmware has VT-d off, and some kernels turn the
IOMMU on with no parameter at all.
"""

from __future__ import annotations

import re
from typing import Any

from passthrough.boot.cmdline import Param
from passthrough.evidence import Evidence
from passthrough.host import IOMMU_CLASS, IOMMU_GROUPS
from passthrough.readiness.check import Check
from passthrough.readiness.cpu import VIOMMU_FIX
from passthrough.readiness.facts import LOG_LINES_SHOWN, HostFacts

UNIT_KINDS = {"dmar": "Intel VT-d", "ivhd": "AMD-Vi"}
FIRMWARE_FIX = {
    "intel": "Enable VT-d (Intel Virtualization Technology for Directed I/O) in the firmware setup (UEFI/BIOS), "
    "then power the host off and on.",
    "amd": "Enable the IOMMU (AMD-Vi; often 'IOMMU' under AMD CBS or NBIO Common Options) and SVM Mode in the "
    "firmware setup (UEFI/BIOS), then power the host off and on. The kernel turns the AMD IOMMU on by itself: "
    "no kernel parameter is needed.",
    None: "Enable the platform IOMMU (Intel VT-d or AMD-Vi) in the firmware setup (UEFI/BIOS), then power the host "
    "off and on.",
}
OFF_SWITCHES = {
    "intel": ("intel_iommu=off", "iommu=off"),
    "amd": ("amd_iommu=off", "iommu=off"),
    None: ("intel_iommu=off", "amd_iommu=off", "iommu=off"),
}
_ACPI_TABLE = re.compile(r"ACPI: [A-Z0-9]{4} 0x")
_REMAPPING_ON = ("Enabled IRQ remapping", "Interrupt remapping enabled", "IRQ remapping enabled")


def off_switches(facts: HostFacts) -> list[Param]:
    """Parameters on the running command line that turn this platform's IOMMU off."""
    if facts.cmdline is None:
        return []
    specs = OFF_SWITCHES[facts.vendor]
    return [param for param in facts.cmdline.params if any(_is(param, spec) for spec in specs)]


def _is(param: Param, spec: str) -> bool:
    name, _, option = spec.partition("=")
    return param.key == name and option in param.options


def _units_value(units: list[str]) -> str:
    if not units:
        return "empty"
    kinds = sorted({kind for prefix, kind in UNIT_KINDS.items() for unit in units if unit.startswith(prefix)})
    return " ".join(units) + (f" ({', '.join(kinds)})" if kinds else "")


def check_iommu(facts: HostFacts) -> Check:
    tree, title = facts.tree, "IOMMU present and enabled"
    if not tree.is_dir("sys") or not (tree.is_live or tree.is_dir(IOMMU_CLASS) or tree.is_dir(IOMMU_GROUPS)):
        return Check(
            "iommu", title, "skip", "The tree has neither /sys/class/iommu nor /sys/kernel/iommu_groups to read."
        )
    units, groups = facts.iommu_units, facts.iommu_groups
    evidence = [
        Evidence("/sys/class/iommu", _units_value(units) if tree.is_dir(IOMMU_CLASS) else "missing"),
        Evidence("/sys/kernel/iommu_groups", f"{len(groups)} groups" if groups else "no groups"),
    ]
    if facts.cmdline_text is not None:
        evidence.append(Evidence("/proc/cmdline", facts.cmdline_text))
    evidence += [Evidence("dmesg", line) for line in facts.iommu_log[:LOG_LINES_SHOWN]]
    if units and groups:
        kinds = _units_value(units)
        return Check("iommu", title, "pass", f"The IOMMU is on: units {kinds}, {len(groups)} IOMMU groups.", evidence)
    fix, plan = _no_iommu_fix(facts)
    return Check("iommu", title, "fail", _no_iommu_summary(facts), evidence, fix=fix, plan=plan)


def _no_iommu_summary(facts: HostFacts) -> str:
    units, groups, conflicts = facts.iommu_units, facts.iommu_groups, off_switches(facts)
    if groups and not units:
        return (
            f"There are {len(groups)} IOMMU groups but no IOMMU unit: vfio's no-IOMMU mode or an incomplete capture, "
            "and either way no DMA isolation."
        )
    if units and not groups:
        return f"IOMMU units ({' '.join(units)}) are registered but no device is in an IOMMU group."
    if facts.cpu and facts.cpu.is_virtual_machine:
        return (
            "This host is a virtual machine without a virtual IOMMU: /sys/class/iommu is empty and there are no "
            "IOMMU groups."
        )
    if conflicts:
        return f"No IOMMU is active: the command line turns it off ({' '.join(param.raw for param in conflicts)})."
    enabled = next((line for line in facts.iommu_log if "IOMMU enabled" in line or "IOMMU: enabled" in line), None)
    if enabled:
        return (
            f"The kernel log says '{enabled.split('] ')[-1]}' yet no IOMMU unit or group exists: the firmware has "
            "the IOMMU off, or the platform has none."
        )
    return "No IOMMU is active: /sys/class/iommu is empty and /sys/kernel/iommu_groups has no groups."


def _no_dmar_table(facts: HostFacts) -> bool:
    """The log lists ACPI tables and DMAR is not among them: the firmware hides VT-d."""
    log = facts.kernel_log or []
    tables = [line for line in log if _ACPI_TABLE.search(line)]
    return bool(tables) and not any("ACPI: DMAR" in line for line in tables)


def _no_iommu_fix(facts: HostFacts) -> tuple[str, dict[str, Any] | None]:
    vendor = facts.vendor
    firmware = FIRMWARE_FIX[vendor]
    cmdline = facts.cmdline
    intel_on = cmdline is not None and cmdline.has("intel_iommu", "on")
    if facts.cpu and facts.cpu.is_virtual_machine:
        if not intel_on:
            # The emulated VT-d works on AMD hosts too, and a guest kernel turns it on only when asked.
            plan = facts.cmdline_plan(["intel_iommu=on"], [])
            return f"{VIOMMU_FIX} Then, inside this VM: {_lower_first(plan.describe())}", plan.to_json()
        return VIOMMU_FIX, None
    conflicts = off_switches(facts)
    if conflicts:
        add = ["intel_iommu=on"] if vendor == "intel" else []
        remove = [f"{param.key}=off" for param in conflicts if not (add and param.key == "intel_iommu")]
        plan = facts.cmdline_plan(add, remove)
        return f"{plan.describe()} If no IOMMU groups appear after the reboot: {_lower_first(firmware)}", plan.to_json()
    if vendor == "intel" and not intel_on:
        plan = facts.cmdline_plan(["intel_iommu=on"], [])
        if _no_dmar_table(facts):
            return (
                "The firmware publishes no ACPI DMAR table, so VT-d is off or absent. "
                f"{firmware} Also {_lower_first(plan.describe())}",
                plan.to_json(),
            )
        return f"{plan.describe()} If no IOMMU groups appear after the reboot: {_lower_first(firmware)}", plan.to_json()
    return firmware, None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def check_interrupt_remapping(facts: HostFacts) -> Check:
    title = "Interrupt remapping"
    interrupts = facts.tree.read("proc/interrupts", limit=8 << 20)
    log = facts.kernel_log
    if interrupts is None and log is None:
        return Check(
            "interrupt_remapping", title, "skip", "The tree has neither /proc/interrupts nor a kernel log to read."
        )
    evidence = []
    chips = sorted(
        {word for line in (interrupts or "").splitlines() for word in line.split() if word.startswith("IR-")}
    )
    if interrupts is not None:
        evidence.append(Evidence("/proc/interrupts", " ".join(chips) if chips else "no IR- interrupt chips"))
    remap_lines = [line.strip() for line in log or [] if "remapping" in line.lower()]
    evidence += [Evidence("dmesg", line) for line in remap_lines[:LOG_LINES_SHOWN]]
    unsafe = _unsafe_interrupts(facts)
    evidence += unsafe
    on = bool(chips) or any(marker in line for line in remap_lines for marker in _REMAPPING_ON)
    notes = []
    if unsafe:
        notes.append(
            "vfio_iommu_type1.allow_unsafe_interrupts=1 is set: vfio assigns devices even without interrupt "
            "remapping, and a guest can then forge MSI writes that inject interrupts into the host."
        )
    if on:
        return Check("interrupt_remapping", title, "pass", "Interrupt remapping is on.", evidence, notes=notes)
    summary = (
        "No interrupt remapping: vfio refuses to assign devices unless vfio_iommu_type1.allow_unsafe_interrupts=1 "
        "is set, and that lets a guest inject arbitrary interrupts into the host (MSI spoofing)."
    )
    off = [param for param in (facts.cmdline.params if facts.cmdline else []) if _is(param, "intremap=off")]
    if off:
        plan = facts.cmdline_plan([], ["intremap=off"])
        return Check("interrupt_remapping", title, "warn", summary, evidence, plan.describe(), plan.to_json(), notes)
    if not (facts.iommu_units and facts.iommu_groups):
        fix = "Interrupt remapping comes with the IOMMU: fix the iommu check first."
    elif facts.vendor == "amd":
        fix = (
            "Enable the IOMMU and x2APIC in the firmware setup; AMD-Vi remaps interrupts when the firmware's IVRS "
            "table allows it."
        )
    else:
        fix = "Enable VT-d and x2APIC in the firmware setup; some older chipsets have VT-d without interrupt remapping."
    return Check("interrupt_remapping", title, "warn", summary, evidence, fix, notes=notes)


def _unsafe_interrupts(facts: HostFacts) -> list[Evidence]:
    tree, found = facts.tree, []
    for param in facts.cmdline.params if facts.cmdline else []:
        if param.key == "vfio_iommu_type1.allow_unsafe_interrupts" and param.value in ("1", "Y", "y"):
            found.append(Evidence("/proc/cmdline", param.raw))
    for name in sorted(tree.listdir("etc/modprobe.d")):
        for line in (tree.read(f"etc/modprobe.d/{name}") or "").splitlines():
            words = line.split("#", 1)[0].split()
            if words[:2] == ["options", "vfio_iommu_type1"] and "allow_unsafe_interrupts=1" in words[2:]:
                found.append(Evidence(f"/etc/modprobe.d/{name}", line.strip()))
    live = tree.read("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts")
    if live == "Y":
        found.append(Evidence("/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", live))
    return found


def check_iommu_passthrough_mode(facts: HostFacts) -> Check:
    title = "IOMMU passthrough mode (iommu=pt)"
    cmdline = facts.cmdline
    if cmdline is None:
        return Check("iommu_passthrough_mode", title, "skip", "The tree has no /proc/cmdline to read.")
    given = [param for param in cmdline.params if _is(param, "iommu=pt") or param.key == "iommu.passthrough"]
    evidence = [Evidence("/proc/cmdline", " ".join(param.raw for param in given) or "no iommu=pt")]
    default = [line for line in facts.iommu_log if "Default domain type" in line]
    evidence += [Evidence("dmesg", line) for line in default[-1:]]
    if given:
        last = given[-1]
        passthrough = _is(last, "iommu=pt") or (last.key == "iommu.passthrough" and last.value in ("1", "y", "Y", "on"))
    else:
        # Kernels built with CONFIG_IOMMU_DEFAULT_PASSTHROUGH need no parameter.
        passthrough = bool(default) and "Passthrough" in default[-1]
    if passthrough:
        return Check(
            "iommu_passthrough_mode",
            title,
            "pass",
            "Devices that stay with the host bypass IOMMU translation (passthrough domain).",
            evidence,
        )
    plan = facts.cmdline_plan(["iommu=pt"], [])
    return Check(
        "iommu_passthrough_mode",
        title,
        "warn",
        "iommu=pt is not set: devices that stay with the host have their DMA translated by the IOMMU, which is "
        "safe but costs some performance (optional).",
        evidence,
        plan.describe(),
        plan.to_json(),
    )
