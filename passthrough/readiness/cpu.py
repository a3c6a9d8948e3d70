"""cpu_virtualization: VT-x (vmx) or AMD-V (svm), and whether this host is itself a VM."""

from __future__ import annotations

from passthrough.evidence import Evidence
from passthrough.readiness.check import Check
from passthrough.readiness.facts import HostFacts

ID = "cpu_virtualization"
TITLE = "CPU virtualization (VT-x / AMD-V)"

POWER_CYCLE = "in the firmware setup (UEFI/BIOS), then power the host off and on."
FIRMWARE_FIX = {
    "intel": f"Enable Intel Virtualization Technology (VT-x) {POWER_CYCLE}",
    "amd": f"Enable SVM Mode (AMD-V) {POWER_CYCLE}",
    None: f"Enable hardware virtualization (Intel VT-x or AMD SVM) {POWER_CYCLE}",
}
HOST_CPU = "and give this VM the host CPU type (QEMU -cpu host; Proxmox cpu: host)."
NESTED_FIX = {
    "intel": f"On the outer host enable nested virtualization (options kvm_intel nested=1) {HOST_CPU}",
    "amd": f"On the outer host enable nested virtualization (options kvm_amd nested=1) {HOST_CPU}",
    None: f"On the outer host enable nested virtualization {HOST_CPU}",
}
VIOMMU_FIX = (
    "Give this VM a virtual IOMMU in the outer hypervisor: QEMU `-machine q35,kernel-irqchip=split "
    "-device intel-iommu,intremap=on,caching-mode=on`; libvirt `<iommu model='intel'><driver intremap='on' "
    "caching_mode='on'/></iommu>`; Proxmox VE `machine: q35,viommu=intel`. Passing through a device then also "
    "needs that device passed to this VM first."
)


def check_cpu_virtualization(facts: HostFacts) -> Check:
    cpu = facts.cpu
    if cpu is None:
        return Check(ID, TITLE, "skip", "The tree has no /proc/cpuinfo, so the CPU cannot be checked.")
    evidence = []
    if cpu.vendor_id:
        evidence.append(Evidence("/proc/cpuinfo", f"vendor_id: {cpu.vendor_id}"))
    if cpu.model:
        evidence.append(
            Evidence("/proc/cpuinfo", f"model name: {cpu.model}" if cpu.has_x86_flags else f"cpu: {cpu.model}")
        )
    if not cpu.has_x86_flags:
        return Check(
            ID,
            TITLE,
            "warn",
            f"This is not an x86 CPU ({cpu.model or 'no model line'}): VT-x and AMD-V do not apply, "
            "and this wizard cannot tell from /proc/cpuinfo whether the platform supports KVM.",
            evidence + [Evidence("/proc/cpuinfo", "no flags line")],
        )
    wanted = "vmx" if cpu.vendor == "intel" else "svm" if cpu.vendor == "amd" else None
    present = sorted(cpu.flags & {"vmx", "svm"})
    shown = [flag for flag in ("vmx", "svm", "hypervisor") if flag in cpu.flags]
    missing = [flag for flag in ([wanted] if wanted else ["vmx", "svm"]) if flag not in cpu.flags]
    value = f"flags include {' '.join(shown)}" if shown else "flags include neither vmx nor svm"
    if shown and missing and not present:
        value += f"; no {' or '.join(missing)}"
    evidence.append(Evidence("/proc/cpuinfo", f"{value} ({len(cpu.flags)} flags)"))
    extension = {"vmx": "VT-x (vmx)", "svm": "AMD-V (svm)"}
    if cpu.is_virtual_machine:
        if present:
            return Check(
                ID,
                TITLE,
                "warn",
                f"This host is itself a virtual machine (hypervisor flag) with nested {extension[present[0]]}; "
                "passthrough inside it needs a virtual IOMMU from the outer hypervisor.",
                evidence,
                fix=VIOMMU_FIX,
            )
        return Check(
            ID,
            TITLE,
            "fail",
            "This host is itself a virtual machine (hypervisor flag) and its virtual CPU has neither vmx nor svm, "
            "so it cannot run KVM guests; passthrough would also need a virtual IOMMU from the outer hypervisor.",
            evidence,
            fix=f"{NESTED_FIX[cpu.vendor]} {VIOMMU_FIX}",
        )
    if present:
        return Check(ID, TITLE, "pass", f"The CPU has {extension[present[0]]}.", evidence)
    return Check(
        ID,
        TITLE,
        "fail",
        f"The CPU reports no {'VT-x (vmx)' if wanted == 'vmx' else 'AMD-V (svm)' if wanted else 'vmx or svm'} flag: "
        "hardware virtualization is off in the firmware or absent.",
        evidence,
        fix=FIRMWARE_FIX[cpu.vendor],
    )
