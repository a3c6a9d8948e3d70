"""Readiness: CPU virtualization, the IOMMU and its fixes, interrupt remapping and passthrough mode
(the JSON contract, robustness and this machine: test_readiness_contract.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from passthrough.host import HostTree
from passthrough.hosttrees.spec import HostSpec
from passthrough.readiness import Check, is_ready, report, run_checks
from passthrough.readiness.iommu import FIRMWARE_FIX
from tests.readiness_data import (
    DEBIAN_GRUB,
    DEBIAN_OS_RELEASE,
    UBUNTU_OS_RELEASE,
    first_line,
    grouped_intel_functions,
    shell_output,
    text,
)

MakeTree = Callable[[HostSpec], Path]
INTEL_CPU = text("cpuinfo-intel-xeon-e5-2680.txt")
AMD_CPU = text("cpuinfo-amd-opteron-6134.txt")
KVM_GUEST_CPU = text("cpuinfo-kvm-guest-skylake.txt")
POWER9_CPU = text("cpuinfo-ibm-power9.txt")
FUJI_CMDLINE = first_line("cmdline-asokolsky-fuji.txt")  # Proxmox, intel_iommu=on
SUPROX_CMDLINE = first_line("cmdline-asokolsky-suprox.txt")  # Proxmox, intel_iommu=on iommu=pt
DEBIAN_CMDLINE = first_line("cmdline-hwloc-debian-intel.txt")  # no IOMMU parameter
FUJI_DMAR_LOG = shell_output("dmesg-asokolsky-fuji-dmar.txt")
IDS = [
    "cpu_virtualization",
    "iommu",
    "interrupt_remapping",
    "iommu_passthrough_mode",
    "vfio_modules",
    "dev_vfio",
    "boot_mode",
    "bootloader",
    "initramfs_tool",
    "acs_override",
    "kernel_cmdline",
]


def checks_of(make_tree: MakeTree, **spec: Any) -> dict[str, Check]:
    spec.setdefault("osrelease", "6.1.0-28-amd64")
    return {check.id: check for check in run_checks(HostTree(make_tree(HostSpec(**spec))))}


def everything_said(checks: dict[str, Check]) -> str:
    return json.dumps([check.to_json() for check in checks.values()])


# ---- cpu_virtualization -------------------------------------------------------------


def test_a_real_intel_xeon_with_vmx_passes(make_tree: MakeTree) -> None:
    check = checks_of(make_tree, cpuinfo=INTEL_CPU)["cpu_virtualization"]
    assert check.status == "pass" and "VT-x" in check.summary
    assert {"path": "/proc/cpuinfo", "value": "model name: Intel(R) Xeon(R) CPU E5-2680 0 @ 2.70GHz"} in [
        item.to_json() for item in check.evidence
    ]


def test_a_real_amd_opteron_with_svm_passes(make_tree: MakeTree) -> None:
    check = checks_of(make_tree, cpuinfo=AMD_CPU)["cpu_virtualization"]
    assert check.status == "pass" and "AMD-V (svm)" in check.summary


def test_a_real_kvm_guest_without_nested_vmx_fails_and_says_it_is_a_vm(make_tree: MakeTree) -> None:
    check = checks_of(make_tree, cpuinfo=KVM_GUEST_CPU)["cpu_virtualization"]
    assert check.status == "fail"
    assert "itself a virtual machine" in check.summary
    assert check.fix is not None and "nested" in check.fix and "kvm_intel" in check.fix


def test_a_vm_with_nested_vmx_warns_that_it_needs_a_virtual_iommu(make_tree: MakeTree) -> None:
    check = checks_of(make_tree, cpu_flags=("fpu", "vmx", "hypervisor"))["cpu_virtualization"]
    assert check.status == "warn" and "virtual IOMMU" in check.summary
    assert check.fix is not None and "caching-mode=on" in check.fix and "viommu=intel" in check.fix


def test_power9_is_not_judged_by_x86_flags(make_tree: MakeTree) -> None:
    check = checks_of(make_tree, cpuinfo=POWER9_CPU)["cpu_virtualization"]
    assert check.status == "warn" and "not an x86 CPU (POWER9, altivec supported)" in check.summary


@pytest.mark.parametrize(("vendor", "words"), [("GenuineIntel", "VT-x"), ("AuthenticAMD", "SVM Mode (AMD-V)")])
def test_virtualization_off_in_firmware_gets_the_vendors_firmware_words(
    make_tree: MakeTree, vendor: str, words: str
) -> None:
    check = checks_of(make_tree, cpu_vendor=vendor, cpu_flags=("fpu", "sse2"))["cpu_virtualization"]
    assert check.status == "fail" and check.fix is not None and words in check.fix and "firmware" in check.fix


# ---- iommu --------------------------------------------------------------------------


def test_a_vm_with_the_hypervisor_flag_and_no_iommu_is_not_ready_and_says_why(make_tree: MakeTree) -> None:
    root = make_tree(HostSpec(cpuinfo=KVM_GUEST_CPU, iommu=None, osrelease="6.1.0-28-amd64"))
    assert os.listdir(root / "sys/class/iommu") == []
    result = report(HostTree(root))
    assert result["ready"] is False
    iommu = next(check for check in result["checks"] if check["id"] == "iommu")
    assert iommu["status"] == "fail"
    assert iommu["summary"].startswith("This host is a virtual machine without a virtual IOMMU")
    assert {"path": "/sys/class/iommu", "value": "empty"} in iommu["evidence"]
    assert "viommu=intel" in iommu["fix"]
    assert iommu["summary"] in result["reasons"]


# What a Debian 6.1 kernel printed in QEMU (TCG, -cpu max: AuthenticAMD with the hypervisor flag) given
# intel_iommu=on and no virtual IOMMU (tests/realkernel scenario no-iommu): the parameter is parsed, nothing more.
QEMU_NO_VIOMMU_CMDLINE = "console=ttyS0 panic=-1 loglevel=4 intel_iommu=on"
QEMU_NO_VIOMMU_LOG = (
    "[    0.000000] Command line: console=ttyS0 panic=-1 loglevel=4 intel_iommu=on\n"
    "[    0.099600] DMAR: IOMMU enabled\n"
    "[    1.141177] iommu: Default domain type: Translated \n"
    "[    1.502832] AMD-Vi: AMD IOMMUv2 functionality not available on this system - This is not a bug.\n"
)
QEMU_AMD_CPU_FLAGS = ("fpu", "svm", "x2apic", "hypervisor")


def test_an_amd_vm_whose_kernel_says_dmar_enabled_without_a_viommu_is_not_ready(make_tree: MakeTree) -> None:
    checks = checks_of(
        make_tree,
        cpu_vendor="AuthenticAMD",
        cpu_flags=QEMU_AMD_CPU_FLAGS,
        iommu=None,
        cmdline=QEMU_NO_VIOMMU_CMDLINE,
        dmesg=QEMU_NO_VIOMMU_LOG,
    )
    assert not is_ready(list(checks.values()))
    iommu = checks["iommu"]
    assert iommu.status == "fail"
    assert iommu.summary.startswith("This host is a virtual machine without a virtual IOMMU")
    assert ("dmesg", "[    0.099600] DMAR: IOMMU enabled") in [(item.path, item.value) for item in iommu.evidence]
    # The kernel did read intel_iommu=on on this AMD CPU: the VM's IOMMU could be an emulated VT-d.
    assert not any("has no effect" in note for note in checks["kernel_cmdline"].notes)


def test_an_amd_vm_with_an_emulated_vt_d_is_an_intel_platform(make_tree: MakeTree) -> None:
    checks = checks_of(
        make_tree,
        cpu_vendor="AuthenticAMD",
        cpu_flags=QEMU_AMD_CPU_FLAGS,
        iommu="intel",
        functions=grouped_intel_functions(),
        cmdline="console=ttyS0 intel_iommu=on iommu=pt amd_iommu=off",
    )
    assert checks["iommu"].status == "pass" and "(Intel VT-d)" in checks["iommu"].summary
    # amd_iommu=off turns off nothing here: the AMD IOMMU driver does not run.
    assert checks["kernel_cmdline"].status == "pass"
    notes = checks["kernel_cmdline"].notes
    assert "amd_iommu= has no effect on an Intel host." in notes
    assert not any("intel_iommu= has no effect" in note for note in notes)


def test_on_a_bare_metal_amd_host_intel_iommu_is_still_said_to_do_nothing(make_tree: MakeTree) -> None:
    checks = checks_of(make_tree, cpuinfo=AMD_CPU, iommu="amd", cmdline="BOOT_IMAGE=/vmlinuz ro intel_iommu=on")
    assert "intel_iommu= has no effect on an AMD host." in checks["kernel_cmdline"].notes


def test_an_intel_grub_host_without_intel_iommu_gets_the_exact_grub_edit_and_update_grub(make_tree: MakeTree) -> None:
    files = {"etc/default/grub": DEBIAN_GRUB, "etc/os-release": DEBIAN_OS_RELEASE, "usr/sbin/update-grub": ""}
    check = checks_of(make_tree, cpuinfo=INTEL_CPU, cmdline=DEBIAN_CMDLINE, iommu=None, files=files)["iommu"]
    assert check.status == "fail" and check.fix is not None
    assert check.fix.startswith(
        "Add intel_iommu=on to the kernel command line. In /etc/default/grub change\n"
        '    GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nto\n    GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on"\n'
        "then run `update-grub`, then reboot."
    )
    assert "enable VT-d" in check.fix  # in case the firmware has it off too
    assert check.plan is not None and check.plan["commands"] == ["update-grub"]
    assert check.plan["edits"][0]["path"] == "/etc/default/grub"


def test_the_same_host_on_fedora_gets_grub2_mkconfig(make_tree: MakeTree) -> None:
    grub = text("grub-fedora-schplorg.txt").replace(" intel_iommu=on", "")  # the real file, parameter taken out
    files = {"etc/default/grub": grub, "etc/os-release": text("os-release-fedora28-schplorg.txt")}
    check = checks_of(make_tree, cpuinfo=INTEL_CPU, cmdline=DEBIAN_CMDLINE, iommu=None, files=files)["iommu"]
    assert check.plan is not None and check.plan["commands"] == ["grub2-mkconfig -o /boot/grub2/grub.cfg"]
    [change] = check.plan["edits"][0]["changed_lines"]
    assert change["after"].startswith("GRUB_CMDLINE_LINUX=") and change["after"].endswith(' intel_iommu=on"')


def test_a_fedora_file_edited_but_never_applied_gets_only_the_apply_command(make_tree: MakeTree) -> None:
    files = {"etc/default/grub": text("grub-fedora-schplorg.txt"), "etc/os-release": "ID=fedora\n"}
    check = checks_of(make_tree, cpuinfo=INTEL_CPU, cmdline=DEBIAN_CMDLINE, iommu=None, files=files)["iommu"]
    assert check.fix is not None and check.fix.startswith("/etc/default/grub already has this")
    assert "`grub2-mkconfig -o /boot/grub2/grub.cfg`, then reboot" in check.fix


def test_systemd_boot_gets_etc_kernel_cmdline(make_tree: MakeTree) -> None:
    files = {"etc/kernel/cmdline": "root=UUID=1 ro quiet\n", "boot/efi/loader/loader.conf": "timeout 3\n"}
    check = checks_of(make_tree, cpuinfo=INTEL_CPU, cmdline="root=UUID=1 ro quiet", iommu=None, files=files)["iommu"]
    assert check.plan is not None and check.plan["edits"][0]["after"] == "root=UUID=1 ro quiet intel_iommu=on\n"
    assert check.plan["commands"][0].startswith("kernel-install add")


def test_proxmox_gets_proxmox_boot_tool(make_tree: MakeTree) -> None:
    files = {
        "etc/kernel/proxmox-boot-uuids": "2A1B-3C4D\n",
        "etc/kernel/cmdline": "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n",
    }
    checks = checks_of(
        make_tree,
        cpuinfo=INTEL_CPU,
        cmdline="initrd=\\EFI\\proxmox\\initrd.img root=ZFS=rpool/ROOT/pve-1 boot=zfs",
        iommu=None,
        files=files,
        osrelease="6.8.12-4-pve",
    )
    plan = checks["iommu"].plan
    assert plan is not None and plan["commands"] == ["proxmox-boot-tool refresh"]
    assert plan["edits"][0] == {
        "path": "/etc/kernel/cmdline",
        "before": "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n",
        "after": "root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on\n",
        "changed_lines": [
            {
                "before": "root=ZFS=rpool/ROOT/pve-1 boot=zfs",
                "after": "root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on",
            }
        ],
    }


@pytest.mark.parametrize(
    "cmdline",
    [DEBIAN_CMDLINE, first_line("cmdline-sirspudd-threadripper.txt"), first_line("cmdline-asokolsky-nas.txt")],
)
def test_an_amd_host_is_never_told_to_add_amd_iommu_on(make_tree: MakeTree, cmdline: str) -> None:
    files = {"etc/default/grub": DEBIAN_GRUB, "etc/os-release": DEBIAN_OS_RELEASE}
    checks = checks_of(make_tree, cpuinfo=AMD_CPU, cmdline=cmdline, iommu=None, files=files)
    assert checks["iommu"].status == "fail" and checks["iommu"].fix == FIRMWARE_FIX["amd"]
    assert "AMD-Vi" in checks["iommu"].fix and "amd_iommu=on" not in checks["iommu"].fix
    for check in checks.values():
        for edit in (check.plan or {}).get("edits", []):
            assert "amd_iommu=on" not in "".join(str(line["after"]) for line in edit["changed_lines"])
        assert "add amd_iommu" not in (check.fix or "").lower()


def test_a_right_command_line_without_groups_gets_the_firmware_fix(make_tree: MakeTree) -> None:
    check = checks_of(make_tree, cpuinfo=INTEL_CPU, cmdline=SUPROX_CMDLINE, iommu=None)["iommu"]
    assert check.status == "fail" and check.fix == FIRMWARE_FIX["intel"] and check.plan is None
    assert "VT-d" in check.fix


def test_dmar_enabled_in_the_kernel_log_with_zero_groups_is_not_ready(make_tree: MakeTree) -> None:
    root = make_tree(
        HostSpec(cpuinfo=INTEL_CPU, cmdline=FUJI_CMDLINE, iommu=None, dmesg=FUJI_DMAR_LOG, osrelease="6.5.11-8-pve")
    )
    checks = run_checks(HostTree(root))
    iommu = next(check for check in checks if check.id == "iommu")
    assert not is_ready(checks) and iommu.status == "fail"
    assert "The kernel log says 'DMAR: IOMMU enabled' yet no IOMMU unit or group exists" in iommu.summary
    assert ("dmesg", "[    0.019700] DMAR: IOMMU enabled") in [(item.path, item.value) for item in iommu.evidence]
    assert iommu.fix == FIRMWARE_FIX["intel"]


def test_a_real_proxmox_host_with_dmar_units_and_groups_passes(make_tree: MakeTree) -> None:
    check = checks_of(
        make_tree, functions=grouped_intel_functions(), cpuinfo=INTEL_CPU, cmdline=FUJI_CMDLINE, dmesg=FUJI_DMAR_LOG
    )["iommu"]
    assert check.status == "pass" and check.summary == "The IOMMU is on: units dmar0 (Intel VT-d), 2 IOMMU groups."
    assert [item.value for item in check.evidence[:2]] == ["dmar0 (Intel VT-d)", "2 groups"]


def test_intel_iommu_off_is_turned_on_in_place(make_tree: MakeTree) -> None:
    grub = DEBIAN_GRUB.replace('"quiet"', '"quiet intel_iommu=off"')
    files = {"etc/default/grub": grub, "etc/os-release": DEBIAN_OS_RELEASE}
    checks = checks_of(
        make_tree, cpuinfo=INTEL_CPU, cmdline="BOOT_IMAGE=/vmlinuz ro quiet intel_iommu=off", iommu=None, files=files
    )
    assert checks["iommu"].summary == "No IOMMU is active: the command line turns it off (intel_iommu=off)."
    assert checks["iommu"].plan is not None
    assert checks["iommu"].plan["edits"][0]["changed_lines"] == [
        {
            "before": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=off"',
            "after": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on"',
        }
    ]
    assert checks["kernel_cmdline"].status == "warn"


def test_amd_iommu_off_is_removed_rather_than_replaced(make_tree: MakeTree) -> None:
    grub = DEBIAN_GRUB.replace('"quiet"', '"quiet amd_iommu=off iommu=off"')
    files = {"etc/default/grub": grub, "etc/os-release": DEBIAN_OS_RELEASE}
    check = checks_of(make_tree, cpuinfo=AMD_CPU, cmdline="ro quiet amd_iommu=off iommu=off", iommu=None, files=files)[
        "iommu"
    ]
    assert (
        check.plan is not None
        and check.plan["edits"][0]["changed_lines"][0]["after"] == 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"'
    )


def test_a_firmware_without_a_dmar_table_is_named_before_the_parameter(make_tree: MakeTree) -> None:
    log = "[    0.008010] ACPI: FACP 0x0000000087AC7000 000114 (v06 ALASKA A M I    01072009 AMI  00010013)\n"
    files = {"etc/default/grub": DEBIAN_GRUB, "etc/os-release": DEBIAN_OS_RELEASE}
    check = checks_of(make_tree, cpuinfo=INTEL_CPU, cmdline=DEBIAN_CMDLINE, iommu=None, dmesg=log, files=files)["iommu"]
    assert check.fix is not None and check.fix.startswith("The firmware publishes no ACPI DMAR table")
    assert "intel_iommu=on" in check.fix


# ---- interrupt_remapping and iommu_passthrough_mode ---------------------------------


def test_ir_interrupt_chips_show_interrupt_remapping(make_tree: MakeTree) -> None:
    check = checks_of(make_tree, interrupt_remapping=True)["interrupt_remapping"]
    assert check.status == "pass" and check.evidence[0].value == "IR-IO-APIC IR-PCI-MSI"


def test_the_kernel_log_alone_can_show_interrupt_remapping(make_tree: MakeTree) -> None:
    log = shell_output("dmesg-asokolsky-fuji-remapping.txt")
    check = checks_of(make_tree, interrupt_remapping=False, dmesg=log)["interrupt_remapping"]
    assert check.status == "pass"
    assert ("dmesg", "[    0.050142] DMAR-IR: Enabled IRQ remapping in x2apic mode") in [
        (e.path, e.value) for e in check.evidence
    ]


def test_no_interrupt_remapping_warns_what_allow_unsafe_interrupts_costs(make_tree: MakeTree) -> None:
    check = checks_of(make_tree, functions=grouped_intel_functions(), interrupt_remapping=False)["interrupt_remapping"]
    assert check.status == "warn"
    assert "vfio_iommu_type1.allow_unsafe_interrupts=1" in check.summary and "inject" in check.summary
    assert check.fix is not None and "VT-d" in check.fix


def test_allow_unsafe_interrupts_on_a_real_command_line_is_pointed_out(make_tree: MakeTree) -> None:
    # developer-onizuka's Ubuntu host, command line as its kernel logged it.
    logged = next(line for line in text("dmesg-onizuka-vfio.txt").splitlines() if "] Command line: " in line)
    cmdline = logged.split("] Command line: ", 1)[1]
    check = checks_of(make_tree, cmdline=cmdline, interrupt_remapping=True)["interrupt_remapping"]
    assert check.status == "pass"
    assert ("/proc/cmdline", "vfio_iommu_type1.allow_unsafe_interrupts=1") in [
        (e.path, e.value) for e in check.evidence
    ]
    assert "forge MSI writes" in check.notes[0]


def test_iommu_pt_passes_and_its_absence_warns_with_this_hosts_edit(make_tree: MakeTree) -> None:
    assert checks_of(make_tree, cmdline=SUPROX_CMDLINE)["iommu_passthrough_mode"].status == "pass"
    files = {
        "etc/default/grub": text("grub-grep-onizuka.txt").splitlines()[1] + "\n",
        "etc/os-release": UBUNTU_OS_RELEASE,
    }
    check = checks_of(make_tree, cmdline=DEBIAN_CMDLINE, files=files)["iommu_passthrough_mode"]
    assert check.status == "warn" and "optional" in check.summary
    # The real Ubuntu line already holds iommu=pt: only running update-grub and rebooting is missing.
    assert check.plan is not None and check.plan["already_configured"] and check.plan["commands"] == ["update-grub"]


def test_a_kernel_that_defaults_to_passthrough_needs_no_parameter(make_tree: MakeTree) -> None:
    log = "[    0.310346] iommu: Default domain type: Passthrough\n"
    assert checks_of(make_tree, cmdline=DEBIAN_CMDLINE, dmesg=log)["iommu_passthrough_mode"].status == "pass"
