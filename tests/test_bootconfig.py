"""Boot loader and initramfs detection, and the kernel command-line edit plan for each."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from passthrough.boot.cmdline import InvalidKernelParameter, KernelCmdline
from passthrough.boot.loader import (
    LOADER_INFO,
    cmdline_edit,
    detect_bootloader,
    detect_initramfs_tool,
    early_load_edit,
    module_load_edit,
)
from passthrough.host import HostTree
from passthrough.hosttrees.spec import HostSpec
from tests.readiness_data import (
    ARCH_OS_RELEASE,
    DEBIAN_GRUB,
    DEBIAN_OS_RELEASE,
    POP_OS_RELEASE,
    first_line,
    text,
    without_boot_image,
)

MakeTree = Callable[[HostSpec], Path]
FEDORA_GRUB = text("grub-fedora-schplorg.txt")
FEDORA_OS_RELEASE = text("os-release-fedora28-schplorg.txt")
SIRSPUDD_CMDLINE = first_line("cmdline-sirspudd-threadripper.txt")
POP_ENTRY_PATH = first_line("popos-entry-path-mapmanagement.txt").lstrip("/")
POP_OPTIONS_LINE = first_line("popos-entry-options-mapmanagement.txt")


def host(make_tree: MakeTree, files: dict[str, str], **spec: object) -> HostTree:
    spec.setdefault("osrelease", "6.1.0-28-amd64")  # treebuilder's default is a Proxmox kernel
    return HostTree(make_tree(HostSpec(files=files, **spec)))  # type: ignore[arg-type]


def test_debian_grub_edits_grub_cmdline_linux_default_and_runs_update_grub(make_tree: MakeTree) -> None:
    tree = host(make_tree, {"etc/default/grub": DEBIAN_GRUB, "etc/os-release": DEBIAN_OS_RELEASE})
    plan = cmdline_edit(tree, ["intel_iommu=on"], [])
    assert plan.bootloader.name == "grub" and plan.bootloader.managed_by is None
    [edit] = plan.edits
    assert edit.path == "/etc/default/grub"
    assert edit.changed_lines() == [
        ('GRUB_CMDLINE_LINUX_DEFAULT="quiet"', 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on"')
    ]
    assert edit.after == DEBIAN_GRUB.replace('"quiet"', '"quiet intel_iommu=on"')
    assert plan.commands == ["update-grub"]
    assert "update-grub" in plan.describe() and "reboot" in plan.describe()


def test_fedora_grub_without_a_default_variable_edits_grub_cmdline_linux_and_runs_grub2_mkconfig(
    make_tree: MakeTree,
) -> None:
    # The real Fedora 28 file already carries intel_iommu=on; take it out to see where it goes back.
    grub = FEDORA_GRUB.replace(" intel_iommu=on", "")
    tree = host(
        make_tree, {"etc/default/grub": grub, "etc/os-release": FEDORA_OS_RELEASE}, osrelease="4.18.17-200.fc28.x86_64"
    )
    plan = cmdline_edit(tree, ["intel_iommu=on"], [])
    [(old, new)] = plan.edits[0].changed_lines()
    assert old.startswith("GRUB_CMDLINE_LINUX=") and new == old[:-1] + ' intel_iommu=on"'
    assert plan.commands == ["grub2-mkconfig -o /boot/grub2/grub.cfg"]


def test_a_file_that_already_has_the_parameter_needs_only_the_apply_command(make_tree: MakeTree) -> None:
    tree = host(make_tree, {"etc/default/grub": FEDORA_GRUB, "etc/os-release": FEDORA_OS_RELEASE})
    plan = cmdline_edit(tree, ["intel_iommu=on"], [])
    assert plan.edits == [] and plan.already_configured
    assert plan.commands == ["grub2-mkconfig -o /boot/grub2/grub.cfg"]
    assert "already has this" in plan.describe()


def test_fedora_with_bls_entries_also_gets_grubby_for_the_existing_entries(make_tree: MakeTree) -> None:
    entry = (
        "title Fedora Linux (6.8.5-301.fc40.x86_64)\nlinux /vmlinuz-6.8.5-301.fc40.x86_64\n"
        "options root=UUID=1 ro rhgb quiet\n"
    )
    files = {
        "etc/default/grub": 'GRUB_CMDLINE_LINUX="rhgb quiet"\nGRUB_ENABLE_BLSCFG=true\n',
        "etc/os-release": "ID=fedora\nVERSION_ID=40\n",
        "boot/loader/entries/abc-6.8.5-301.fc40.x86_64.conf": entry,
        "boot/grub2/grub.cfg": "blscfg\n",
    }
    plan = cmdline_edit(host(make_tree, files), ["intel_iommu=on", "iommu=pt"], [])
    assert plan.bootloader.name == "grub"
    assert plan.commands == [
        "grub2-mkconfig -o /boot/grub2/grub.cfg",
        'grubby --update-kernel=ALL --args="intel_iommu=on iommu=pt"',
    ]


def test_arch_grub_runs_grub_mkconfig_into_boot_grub(make_tree: MakeTree) -> None:
    tree = host(
        make_tree, {"etc/default/grub": DEBIAN_GRUB, "etc/os-release": ARCH_OS_RELEASE, "usr/bin/mkinitcpio": ""}
    )
    assert cmdline_edit(tree, ["iommu=pt"], []).commands == ["grub-mkconfig -o /boot/grub/grub.cfg"]


def test_a_grub_d_file_that_sets_the_variable_is_the_one_edited(make_tree: MakeTree) -> None:
    # Ubuntu cloud images override the default in /etc/default/grub.d/50-cloudimg-settings.cfg.
    files = {
        "etc/default/grub": DEBIAN_GRUB,
        "etc/default/grub.d/50-cloudimg-settings.cfg": 'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0"\n',
        "etc/os-release": DEBIAN_OS_RELEASE,
    }
    plan = cmdline_edit(host(make_tree, files), ["intel_iommu=on"], [])
    [edit] = plan.edits
    assert edit.path == "/etc/default/grub.d/50-cloudimg-settings.cfg"
    assert edit.after == 'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0 intel_iommu=on"\n'


def test_a_conflicting_value_is_replaced_in_place_and_removals_reach_every_variable(make_tree: MakeTree) -> None:
    grub = (
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=off splash"\n'
        'GRUB_CMDLINE_LINUX="iommu=off pcie_acs_override=downstream,multifunction"\n'
    )
    tree = host(make_tree, {"etc/default/grub": grub, "etc/os-release": DEBIAN_OS_RELEASE})
    plan = cmdline_edit(tree, ["intel_iommu=on"], ["iommu=off", "pcie_acs_override"])
    assert plan.edits[0].after == 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on splash"\nGRUB_CMDLINE_LINUX=""\n'


def test_unquoted_and_single_quoted_grub_values_are_edited_safely(make_tree: MakeTree) -> None:
    grub = "GRUB_CMDLINE_LINUX_DEFAULT=quiet\nGRUB_CMDLINE_LINUX='rootwait'\n"
    tree = host(make_tree, {"etc/default/grub": grub, "etc/os-release": DEBIAN_OS_RELEASE})
    after = cmdline_edit(tree, ["iommu=pt"], ["rootwait"]).edits[0].after
    assert after == "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet iommu=pt\"\nGRUB_CMDLINE_LINUX=''\n"


def test_a_grub_reference_to_the_previous_value_counts_as_holding_its_words(make_tree: MakeTree) -> None:
    files = {
        "etc/default/grub": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on"\n',
        "etc/default/grub.d/90-local.cfg": 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt"\n',
        "etc/os-release": DEBIAN_OS_RELEASE,
    }
    assert cmdline_edit(host(make_tree, files), ["intel_iommu=on", "iommu=pt"], []).already_configured


def test_proxmox_systemd_boot_edits_etc_kernel_cmdline_and_refreshes_with_proxmox_boot_tool(
    make_tree: MakeTree,
) -> None:
    cmdline = without_boot_image(first_line("cmdline-asokolsky-fuji.txt"))
    files = {
        "etc/kernel/proxmox-boot-uuids": "2A1B-3C4D\n",
        "etc/kernel/cmdline": cmdline + "\n",
        "etc/os-release": DEBIAN_OS_RELEASE,
    }
    tree = host(make_tree, files, osrelease="6.5.11-8-pve")
    plan = cmdline_edit(tree, ["iommu=pt"], [])
    assert plan.bootloader.label == "systemd-boot (managed by proxmox-boot-tool)"
    assert plan.edits[0].path == "/etc/kernel/cmdline"
    assert plan.edits[0].after == f"{cmdline} iommu=pt\n"
    assert plan.commands == ["proxmox-boot-tool refresh"]


def test_proxmox_legacy_boot_keeps_grub_but_refreshes_with_proxmox_boot_tool(make_tree: MakeTree) -> None:
    files = {"etc/kernel/proxmox-boot-uuids": "2A1B-3C4D\n", "etc/default/grub": DEBIAN_GRUB}
    tree = host(make_tree, files, osrelease="6.8.12-4-pve", efi=False)
    plan = cmdline_edit(tree, ["intel_iommu=on"], [])
    assert plan.bootloader.name == "grub" and plan.bootloader.managed_by == "proxmox-boot-tool"
    assert plan.edits[0].path == "/etc/default/grub" and plan.commands == ["proxmox-boot-tool refresh"]


def test_proxmox_on_lvm_without_proxmox_boot_tool_uses_update_grub(make_tree: MakeTree) -> None:
    tree = host(make_tree, {"etc/default/grub": DEBIAN_GRUB}, osrelease="6.5.11-8-pve")
    plan = cmdline_edit(tree, ["intel_iommu=on"], [])
    assert plan.bootloader.distro.proxmox and plan.commands == ["update-grub"]


def test_systemd_boot_with_etc_kernel_cmdline_rebuilds_the_entry_with_kernel_install(make_tree: MakeTree) -> None:
    cmdline = without_boot_image(first_line("cmdline-hwloc-debian-intel.txt"))
    files = {
        "etc/kernel/cmdline": cmdline + "\n",
        "boot/efi/loader/loader.conf": "timeout 3\n",
        "etc/os-release": DEBIAN_OS_RELEASE,
    }
    plan = cmdline_edit(host(make_tree, files), ["intel_iommu=on"], [])
    assert plan.bootloader.name == "systemd-boot" and plan.bootloader.managed_by == "kernel-install"
    assert plan.edits[0].after == f"{cmdline} intel_iommu=on\n"
    assert plan.commands == ['kernel-install add "$(uname -r)" "/lib/modules/$(uname -r)/vmlinuz"']


def test_arch_systemd_boot_entries_are_edited_directly_keeping_quoted_values(make_tree: MakeTree) -> None:
    # sirspudd's real command line, as the options line of a hand-written Arch entry.
    options = " ".join(word for word in SIRSPUDD_CMDLINE.split() if not word.startswith("initrd="))
    entry = (
        f"title Arch Linux\nlinux /vmlinuz-linux\ninitrd /amd-ucode.img\ninitrd /initramfs-linux.img\n"
        f"options {options}\n"
    )
    files = {
        "boot/loader/loader.conf": "default arch.conf\n",
        "boot/loader/entries/arch.conf": entry,
        "etc/os-release": ARCH_OS_RELEASE,
    }
    plan = cmdline_edit(host(make_tree, files, cmdline=SIRSPUDD_CMDLINE), [], ["pcie_aspm", "iommu=pt"])
    assert plan.bootloader.name == "systemd-boot" and plan.commands == []
    [(old, new)] = plan.edits[0].changed_lines()
    assert new == old.replace(" pcie_aspm=off", "").replace(" iommu=pt", "")
    assert "no command is needed" in plan.describe()


def test_systemd_boot_is_recognised_from_its_loader_info_efi_variable(make_tree: MakeTree) -> None:
    root = make_tree(
        HostSpec(files={"boot/efi/loader/entries/x.conf": "options quiet\n", "etc/default/grub": DEBIAN_GRUB})
    )
    # An efivarfs file: 4 attribute bytes, then UTF-16LE text with a terminating NUL.
    Path(root, LOADER_INFO).write_bytes(b"\x06\x00\x00\x00" + "systemd-boot 252.30\x00".encode("utf-16-le"))
    loader = detect_bootloader(HostTree(root))
    assert loader.name == "systemd-boot"
    assert any(item.value == "systemd-boot 252.30" for item in loader.evidence)


def test_an_empty_loader_info_placeholder_from_a_capture_still_means_systemd_boot(make_tree: MakeTree) -> None:
    root = make_tree(HostSpec(files={LOADER_INFO: "", "boot/efi/loader/entries/x.conf": "options quiet\n"}))
    Path(root, "etc/default").mkdir(parents=True)
    Path(root, "etc/default/grub").write_text(DEBIAN_GRUB)  # GRUB installed but not what booted
    loader = detect_bootloader(HostTree(root))
    assert loader.name == "systemd-boot" and loader.evidence[0].value == "present"


def test_pop_os_entries_are_changed_through_kernelstub(make_tree: MakeTree) -> None:
    # The real options line, in an entry shaped as kernelstub writes them.
    entry = (
        "title Pop!_OS\nlinux /EFI/Pop_OS-486bc510/vmlinuz.efi\ninitrd /EFI/Pop_OS-486bc510/initrd.img\n"
        f"{POP_OPTIONS_LINE}\n"
    )
    files = {
        POP_ENTRY_PATH: entry,
        "boot/efi/loader/loader.conf": "default Pop_OS-current\n",
        "etc/os-release": POP_OS_RELEASE,
    }
    plan = cmdline_edit(host(make_tree, files), ["iommu=pt"], ["amd_iommu"])
    assert plan.bootloader.managed_by == "kernelstub" and not plan.edit_by_hand
    assert plan.edits[0].path == "/boot/efi/loader/entries/Pop_OS-current.conf"
    assert plan.commands == ['kernelstub -d "amd_iommu=on"', 'kernelstub -a "iommu=pt"']
    assert 'vfio-pci.ids="1002:aaf8,1002:687f" iommu=pt' in plan.edits[0].after


def test_refind_and_syslinux_options_are_edited_per_boot_entry(make_tree: MakeTree) -> None:
    refind = (
        '"Boot with standard options"  "ro root=UUID=1 quiet"\n"Boot to single-user mode"  "ro root=UUID=1 single"\n'
    )
    plan = cmdline_edit(host(make_tree, {"boot/refind_linux.conf": refind}), ["intel_iommu=on"], [])
    assert plan.bootloader.name == "refind"
    assert plan.edits[0].after == refind.replace('quiet"', 'quiet intel_iommu=on"').replace(
        'single"', 'single intel_iommu=on"'
    )
    syslinux = "DEFAULT linux\nLABEL linux\n    LINUX ../vmlinuz-linux\n    APPEND root=/dev/sda2 rw\n"
    plan = cmdline_edit(host(make_tree, {"boot/syslinux/syslinux.cfg": syslinux}), ["iommu=pt"], [])
    assert plan.bootloader.name == "syslinux"
    assert plan.edits[0].after.endswith("    APPEND root=/dev/sda2 rw iommu=pt\n")


def test_an_unknown_boot_loader_gives_no_invented_file(make_tree: MakeTree) -> None:
    plan = cmdline_edit(host(make_tree, {}), ["intel_iommu=on"], [])
    assert plan.bootloader.name == "unknown" and not plan.possible and plan.edits == []
    assert plan.describe().startswith("Add intel_iommu=on to the kernel command line in your boot loader")


@pytest.mark.parametrize("bad", ["", "intel_iommu=on iommu=pt", 'vfio-pci.ids="10de:1c02"', "=on", "x=$(reboot)"])
def test_a_parameter_that_would_break_the_file_is_refused_with_a_clear_error(make_tree: MakeTree, bad: str) -> None:
    tree = host(make_tree, {"etc/default/grub": DEBIAN_GRUB})
    with pytest.raises(InvalidKernelParameter) as raised:
        cmdline_edit(tree, [bad], [])
    assert repr(bad) in raised.value.message and raised.value.hint


def test_planning_an_edit_writes_nothing(make_tree: MakeTree) -> None:
    tree = host(make_tree, {"etc/default/grub": DEBIAN_GRUB, "etc/os-release": DEBIAN_OS_RELEASE})
    grub = Path(tree.path("etc/default/grub"))
    stat = os.stat(grub)
    cmdline_edit(tree, ["intel_iommu=on"], ["quiet"])
    early_load_edit(tree, ["vfio_pci"])
    module_load_edit(tree, ["vfio_pci"])
    assert grub.read_text() == DEBIAN_GRUB and os.stat(grub).st_mtime_ns == stat.st_mtime_ns
    assert not Path(tree.path("etc/modules")).exists()


@pytest.mark.parametrize(
    ("marker", "name", "command", "modules_file"),
    [
        ("usr/sbin/update-initramfs", "initramfs-tools", "update-initramfs -u -k all", "/etc/initramfs-tools/modules"),
        ("usr/bin/dracut", "dracut", "dracut -f --regenerate-all", "/etc/dracut.conf.d/vfio.conf"),
        ("usr/bin/mkinitcpio", "mkinitcpio", "mkinitcpio -P", "/etc/mkinitcpio.conf"),
        ("sbin/update-initramfs", "initramfs-tools", "update-initramfs -u -k all", "/etc/initramfs-tools/modules"),
    ],
)
def test_each_initramfs_tool_yields_its_rebuild_command(
    make_tree: MakeTree, marker: str, name: str, command: str, modules_file: str
) -> None:
    tool = detect_initramfs_tool(host(make_tree, {marker: ""}))
    assert (tool.name, tool.rebuild_command, tool.modules_file) == (name, command, modules_file)
    assert tool.evidence[0].path == f"/{marker}"


def test_with_two_generators_installed_the_distribution_default_wins(make_tree: MakeTree) -> None:
    files = {"usr/bin/dracut": "", "usr/sbin/update-initramfs": "", "etc/os-release": DEBIAN_OS_RELEASE}
    assert detect_initramfs_tool(host(make_tree, files)).name == "initramfs-tools"
    files["etc/os-release"] = FEDORA_OS_RELEASE
    assert detect_initramfs_tool(host(make_tree, files)).name == "dracut"


def test_no_initramfs_generator_is_unknown(make_tree: MakeTree) -> None:
    tool = detect_initramfs_tool(host(make_tree, {}))
    assert tool.name == "unknown" and tool.rebuild_command is None


def test_dracut_add_drivers_does_not_load_early_so_force_drivers_is_added(make_tree: MakeTree) -> None:
    real = text("dracut-vfio-schplorg.conf")  # add_drivers+="vfio vfio_iommu_type1 vfio_pci vfio_virqfd"
    tree = host(make_tree, {"etc/dracut.conf.d/vfio.conf": real, "usr/bin/dracut": ""})
    edit = early_load_edit(tree, ["vfio", "vfio_iommu_type1", "vfio_pci"])
    assert edit is not None and edit.after == real + 'force_drivers+=" vfio vfio_iommu_type1 vfio_pci "\n'


def test_mkinitcpio_modules_get_vfio_first_and_nothing_twice(make_tree: MakeTree) -> None:
    conf = "# vim:set ft=sh\nMODULES=(amdgpu vfio)\nHOOKS=(base udev autodetect modconf block filesystems)\n"
    tree = host(make_tree, {"etc/mkinitcpio.conf": conf, "usr/bin/mkinitcpio": ""})
    edit = early_load_edit(tree, ["vfio_pci", "vfio", "vfio_iommu_type1"])
    assert edit is not None and edit.changed_lines() == [
        ("MODULES=(amdgpu vfio)", "MODULES=(vfio_pci vfio_iommu_type1 amdgpu vfio)")
    ]
    done = host(make_tree, {"etc/mkinitcpio.conf": edit.after, "usr/bin/mkinitcpio": ""})
    assert not early_load_edit(done, ["vfio_pci", "vfio", "vfio_iommu_type1"]).changed  # type: ignore[union-attr]


def test_initramfs_tools_modules_get_only_the_missing_lines(make_tree: MakeTree) -> None:
    existing = "# List of modules that you want to include in your initramfs.\nvfio\n"
    tree = host(make_tree, {"etc/initramfs-tools/modules": existing, "usr/sbin/update-initramfs": ""})
    edit = early_load_edit(tree, ["vfio", "vfio_iommu_type1", "vfio_pci"])
    assert edit is not None and edit.after == existing + "vfio_iommu_type1\nvfio_pci\n"


def test_modules_load_at_boot_from_etc_modules_on_debian_and_modules_load_d_elsewhere(make_tree: MakeTree) -> None:
    debian = module_load_edit(
        host(make_tree, {"etc/os-release": DEBIAN_OS_RELEASE, "etc/modules": "loop\n"}), ["vfio", "vfio_pci"]
    )
    assert (debian.path, debian.after) == ("/etc/modules", "loop\nvfio\nvfio_pci\n")
    arch = module_load_edit(host(make_tree, {"etc/os-release": ARCH_OS_RELEASE}), ["vfio", "vfio-pci"])
    assert (arch.path, arch.before, arch.after) == ("/etc/modules-load.d/vfio.conf", None, "vfio\nvfio-pci\n")
    listed = host(
        make_tree, {"etc/os-release": ARCH_OS_RELEASE, "etc/modules-load.d/passthrough.conf": "vfio_pci\nvfio\n"}
    )
    assert not module_load_edit(listed, ["vfio", "vfio_pci"]).changed


def test_the_command_line_is_parsed_as_the_kernel_parses_it() -> None:
    pop = KernelCmdline.parse(POP_OPTIONS_LINE.removeprefix("options "))
    assert pop.value("vfio_pci.ids") == "1002:aaf8,1002:687f"  # quoted, and written with a dash
    assert pop.has("amd_iommu", "on") and not pop.has("iommu")
    threadripper = KernelCmdline.parse(SIRSPUDD_CMDLINE)
    assert [param.raw for param in threadripper.find("initrd")] == [
        "initrd=\\amd-ucode.img",
        "initrd=\\initramfs-spudd-master.img",
    ]
    assert threadripper.has("iommu", "pt") and threadripper.value("cgroup_no_v1") == "all"
    firecracker = KernelCmdline.parse("console=ttyS0 -- --init-arg intel_iommu=off")
    assert not firecracker.has("intel_iommu") and firecracker.init_args == ["--init-arg", "intel_iommu=off"]
