"""Readiness: vfio modules, /dev/vfio, boot mode, boot loader, initramfs, ACS override, command line."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from passthrough.host import HostTree
from passthrough.hosttrees.spec import HostSpec
from passthrough.readiness import Check, run_checks
from tests.readiness_data import (
    ARCH_OS_RELEASE,
    DEBIAN_GRUB,
    DEBIAN_OS_RELEASE,
    first_line,
    lsmod_names,
    text,
)

MakeTree = Callable[[HostSpec], Path]
KERNEL = "6.1.0-28-amd64"
VFIO_DEP = (
    "kernel/drivers/vfio/vfio.ko.xz: kernel/drivers/iommu/iommufd/iommufd.ko.xz\n"
    "kernel/drivers/vfio/vfio_iommu_type1.ko.xz: kernel/drivers/vfio/vfio.ko.xz\n"
    "kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz "
    "kernel/drivers/vfio/vfio.ko.xz\n"
    "kernel/drivers/vfio/pci/vfio-pci-core.ko.xz: kernel/drivers/vfio/vfio.ko.xz\n"
)
SIRSPUDD_CMDLINE = first_line("cmdline-sirspudd-threadripper.txt")


def check(make_tree: MakeTree, check_id: str, **spec: Any) -> Check:
    spec.setdefault("osrelease", KERNEL)
    root = make_tree(HostSpec(**spec))
    return next(found for found in run_checks(HostTree(root)) if found.id == check_id)


# ---- vfio_modules -------------------------------------------------------------------


def test_the_vfio_modules_fuji_had_loaded_pass(make_tree: MakeTree) -> None:
    modules = lsmod_names("lsmod-asokolsky-fuji-vfio.txt")  # vfio_pci vfio_virqfd irqbypass vfio_iommu_type1 vfio
    found = check(make_tree, "vfio_modules", modules=modules)
    assert found.status == "pass" and found.summary == "vfio is ready: vfio, vfio_iommu_type1, vfio_pci loaded."
    assert found.evidence[0].to_json() == {"path": "/proc/modules", "value": "vfio vfio_iommu_type1 vfio_pci"}


def test_available_but_not_loaded_on_proxmox_gets_etc_modules_and_update_initramfs(make_tree: MakeTree) -> None:
    files = {
        f"lib/modules/{KERNEL}/modules.dep": VFIO_DEP,
        "usr/sbin/update-initramfs": "",
        "etc/modules": "# /etc/modules\n",
    }
    found = check(make_tree, "vfio_modules", files=files, modules=("kvm",), osrelease=KERNEL)
    assert found.status == "warn" and "vfio, vfio_iommu_type1, vfio_pci available" in found.summary
    assert found.fix is not None
    assert found.fix.startswith("Load them now: `modprobe -a vfio vfio_iommu_type1 vfio_pci`.")
    assert "in /etc/modules add the lines\n    vfio\n    vfio_iommu_type1\n    vfio_pci\n" in found.fix
    assert "create /etc/initramfs-tools/modules containing" in found.fix
    assert found.fix.endswith("then run `update-initramfs -u -k all`.")
    assert found.plan is not None and found.plan["commands"] == [
        "modprobe -a vfio vfio_iommu_type1 vfio_pci",
        "update-initramfs -u -k all",
    ]
    assert [edit["path"] for edit in found.plan["edits"]] == ["/etc/modules", "/etc/initramfs-tools/modules"]


def test_fedora_with_dracut_gets_modules_load_d_and_force_drivers(make_tree: MakeTree) -> None:
    files = {
        f"lib/modules/{KERNEL}/modules.dep": VFIO_DEP,
        "etc/os-release": "ID=fedora\n",
        "etc/dracut.conf.d/vfio.conf": text("dracut-vfio-schplorg.conf"),
        "usr/bin/dracut": "",
    }
    found = check(make_tree, "vfio_modules", files=files, modules=())
    assert found.fix is not None and "create /etc/modules-load.d/vfio.conf" in found.fix
    assert 'force_drivers+=" vfio vfio_iommu_type1 vfio_pci "' in found.fix
    assert found.fix.endswith("then run `dracut -f --regenerate-all`.")


def test_arch_with_mkinitcpio_gets_the_modules_array_and_mkinitcpio_p(make_tree: MakeTree) -> None:
    files = {
        f"lib/modules/{KERNEL}/modules.dep": VFIO_DEP,
        "etc/os-release": ARCH_OS_RELEASE,
        "etc/mkinitcpio.conf": "MODULES=()\nHOOKS=(base udev modconf)\n",
        "usr/bin/mkinitcpio": "",
    }
    found = check(make_tree, "vfio_modules", files=files, modules=())
    assert found.fix is not None and "MODULES=(vfio vfio_iommu_type1 vfio_pci)" in found.fix
    assert found.fix.endswith("then run `mkinitcpio -P`.")


def test_built_in_vfio_passes(make_tree: MakeTree) -> None:
    builtin = (
        "kernel/drivers/vfio/vfio.ko\nkernel/drivers/vfio/vfio_iommu_type1.ko\nkernel/drivers/vfio/pci/vfio-pci.ko\n"
    )
    found = check(make_tree, "vfio_modules", files={f"lib/modules/{KERNEL}/modules.builtin": builtin}, modules=())
    assert found.status == "pass" and "built in" in found.summary


def test_a_kernel_without_vfio_fails(make_tree: MakeTree) -> None:
    dep = "kernel/arch/x86/kvm/kvm.ko.xz:\n"
    found = check(make_tree, "vfio_modules", files={f"lib/modules/{KERNEL}/modules.dep": dep}, modules=("kvm",))
    assert found.status == "fail" and "not in modules.dep or modules.builtin" in found.summary
    assert found.fix is not None and "CONFIG_VFIO_PCI" in found.fix


def test_a_kernel_without_module_support_is_judged_by_sys_module(make_tree: MakeTree) -> None:
    root = make_tree(HostSpec(osrelease=KERNEL))
    os.remove(root / "proc/modules")
    (root / "sys/module/kvm").mkdir(parents=True)
    found = next(c for c in run_checks(HostTree(root)) if c.id == "vfio_modules")
    assert found.status == "fail" and "cannot load modules" in found.summary


def test_not_loaded_without_modules_dep_is_a_warning_not_a_verdict(make_tree: MakeTree) -> None:
    found = check(make_tree, "vfio_modules", modules=("kvm",))
    assert found.status == "warn" and "nobody can tell" in found.summary


def test_a_registered_vfio_pci_driver_means_vfio_pci_is_loaded(make_tree: MakeTree) -> None:
    root = make_tree(HostSpec(osrelease=KERNEL, modules=("vfio_iommu_type1",)))
    (root / "sys/bus/pci/drivers/vfio-pci").mkdir()
    found = next(c for c in run_checks(HostTree(root)) if c.id == "vfio_modules")
    assert found.status == "pass"


# ---- dev_vfio -----------------------------------------------------------------------


def test_dev_vfio_with_group_nodes_passes_and_names_them(make_tree: MakeTree) -> None:
    found = check(make_tree, "dev_vfio", dev_vfio=("vfio", "12"), modules=("vfio",))
    assert found.status == "pass" and "group nodes 12" in found.summary


def test_loaded_vfio_without_its_node_fails(make_tree: MakeTree) -> None:
    found = check(make_tree, "dev_vfio", dev_vfio=("7",), modules=("vfio", "vfio_pci"))
    assert found.status == "fail" and found.fix is not None and "mknod /dev/vfio/vfio c 10 196" in found.fix


def test_a_capture_without_dev_skips_dev_vfio(make_tree: MakeTree) -> None:
    assert check(make_tree, "dev_vfio").status == "skip"


# ---- boot_mode, bootloader, initramfs_tool ------------------------------------------


def test_uefi_boot_passes_and_legacy_boot_warns_about_the_boot_gpu_rom(make_tree: MakeTree) -> None:
    assert check(make_tree, "boot_mode", efi=True).status == "pass"
    legacy = check(make_tree, "boot_mode", efi=False)
    assert legacy.status == "warn" and "VBIOS" in legacy.summary and "ROM file" in legacy.summary
    assert legacy.evidence[0].to_json() == {"path": "/sys/firmware/efi", "value": "missing"}


def test_the_boot_loader_check_names_the_file_and_the_apply_command(make_tree: MakeTree) -> None:
    files = {"etc/default/grub": DEBIAN_GRUB, "etc/os-release": DEBIAN_OS_RELEASE}
    found = check(make_tree, "bootloader", files=files)
    assert found.status == "pass"
    assert (
        found.summary == "GRUB on Debian GNU/Linux 12 (bookworm): the kernel command line lives in /etc/default/grub; "
        "`update-grub` applies it."
    )
    assert ("/etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"') in [(e.path, e.value) for e in found.evidence]


def test_an_unknown_boot_loader_warns(make_tree: MakeTree) -> None:
    found = check(make_tree, "bootloader", files={"etc/hostname": "pve\n"})
    assert found.status == "warn" and "No GRUB, systemd-boot" in found.summary


def test_a_tree_without_etc_boot_or_usr_skips_the_boot_tooling_checks(make_tree: MakeTree) -> None:
    assert check(make_tree, "bootloader").status == "skip"
    assert check(make_tree, "initramfs_tool").status == "skip"


@pytest.mark.parametrize(
    ("marker", "command"),
    [
        ("usr/sbin/update-initramfs", "update-initramfs -u -k all"),
        ("usr/bin/dracut", "dracut -f --regenerate-all"),
        ("usr/bin/mkinitcpio", "mkinitcpio -P"),
    ],
)
def test_the_initramfs_check_gives_each_tools_command(make_tree: MakeTree, marker: str, command: str) -> None:
    found = check(make_tree, "initramfs_tool", files={marker: ""})
    assert found.status == "pass" and f"`{command}`" in found.summary


def test_no_initramfs_generator_warns(make_tree: MakeTree) -> None:
    found = check(make_tree, "initramfs_tool", files={"etc/hostname": "x\n"})
    assert found.status == "warn" and found.fix is not None


# ---- acs_override and kernel_cmdline ------------------------------------------------


def test_acs_override_warns_that_its_groups_are_not_real_isolation(make_tree: MakeTree) -> None:
    files = {
        "etc/default/grub": DEBIAN_GRUB.replace('"quiet"', '"quiet pcie_acs_override=downstream,multifunction"'),
        "etc/os-release": DEBIAN_OS_RELEASE,
    }
    found = check(
        make_tree,
        "acs_override",
        files=files,
        cmdline="BOOT_IMAGE=/vmlinuz ro quiet pcie_acs_override=downstream,multifunction",
    )
    assert found.status == "warn" and "not real isolation" in found.summary
    assert found.evidence[0].value == "pcie_acs_override=downstream,multifunction"
    assert (
        found.plan is not None
        and found.plan["edits"][0]["changed_lines"][0]["after"] == 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"'
    )


def test_no_acs_override_passes(make_tree: MakeTree) -> None:
    assert check(make_tree, "acs_override", cmdline=first_line("cmdline-asokolsky-duo.txt")).status == "pass"


def test_a_real_threadripper_command_line_is_explained(make_tree: MakeTree) -> None:
    found = check(make_tree, "kernel_cmdline", cmdline=SIRSPUDD_CMDLINE, cpuinfo=text("cpuinfo-amd-opteron-6134.txt"))
    assert found.status == "pass" and found.evidence[0].value == SIRSPUDD_CMDLINE
    notes = "\n".join(found.notes)
    assert "vfio-pci claims devices 1002:66af,1002:ab20,144d:a808,1b73:1100,1d6a:d107 at boot" in notes
    assert "video=efifb:off" in notes
    assert "amd_iommu=on is not a valid value" in notes


def test_init_arguments_after_the_double_dash_are_not_kernel_parameters(make_tree: MakeTree) -> None:
    found = check(make_tree, "kernel_cmdline", cmdline="console=ttyS0 quiet -- --firecracker-init intel_iommu=off")
    assert found.status == "pass" and "--firecracker-init intel_iommu=off to init" in found.notes[0]


def test_a_conflicting_iommu_off_switch_warns_with_its_removal(make_tree: MakeTree) -> None:
    files = {
        "etc/default/grub": DEBIAN_GRUB.replace('"quiet"', '"quiet iommu=off"'),
        "etc/os-release": DEBIAN_OS_RELEASE,
    }
    found = check(make_tree, "kernel_cmdline", files=files, cmdline="BOOT_IMAGE=/vmlinuz ro quiet iommu=off")
    assert found.status == "warn" and found.summary.endswith("iommu=off.")
    assert found.fix is not None and 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in found.fix
