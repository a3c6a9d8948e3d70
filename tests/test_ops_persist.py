"""Persistence: a diff before anything is written, backups beside each file, an exact undo."""

from __future__ import annotations

import os
import re
from dataclasses import replace

import pytest

from passthrough.errors import PassthroughError
from passthrough.host import HostTree
from passthrough.kerneldouble import KernelDouble, faults
from passthrough.ops import ROLLED_BACK, SUCCEEDED, UNCHANGED, ConfirmationRequired, InvalidRequest
from passthrough.ops.errors import BootConfigUnsupported, FileChangedSinceApply
from passthrough.ops.persist import (
    MODPROBE_FILE,
    RULES_FILE,
    apply_kernel_cmdline,
    apply_persist_binding,
    apply_rebuild_initramfs,
    apply_unpersist_binding,
    persisted_bindings,
    plan_kernel_cmdline,
    plan_persist_binding,
    plan_unpersist_binding,
    undo_change,
)
from tests.kernelhosts import GT710, GT710_AUDIO, GTX1080TI, GTX1080TI_AUDIO, tree_digest, x570

GPU, AUDIO = GTX1080TI.address, GTX1080TI_AUDIO.address
DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
# Debian's /etc/initramfs-tools/modules as installed.
INITRAMFS_MODULES = (
    "# List of modules that you want to include in your initramfs.\n"
    "# They will be loaded at boot time in the order below.\n"
    "#\n"
    "# Syntax:  module_name [args ...]\n"
    "#\n"
    "# You must run update-initramfs(8) to effect this change.\n"
    "#\n"
    "# Examples:\n"
    "#\n"
    "# raid1\n"
    "# sd_mod\n"
)
# asokolsky-homelab, proxmox__pcie-passthrough block 1 and block 11 (a Proxmox VE host).
PROXMOX_GRUB = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="quiet intel_iommu=on iommu=pt"\n'
PROXMOX_VFIO_CONF = "softdep igb pre: vfio-pci\noptions vfio-pci ids=8086:1521\n"


def text(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def debian_files(**extra: str) -> dict[str, str]:
    return {
        "etc/os-release": DEBIAN,
        "etc/initramfs-tools/modules": INITRAMFS_MODULES,
        "usr/sbin/update-initramfs": "",
        "usr/sbin/update-grub": "",
        "etc/default/grub": PROXMOX_GRUB,
        **extra,
    }


@pytest.fixture
def debian(make_tree) -> KernelDouble:
    return KernelDouble(make_tree(x570(files=debian_files())))


EXPECTED_DIFF = """\
--- /dev/null
+++ b/etc/udev/rules.d/90-passthrough-wizard-vfio.rules
@@ -0,0 +1,6 @@
+# Written by Passthrough Wizard: these PCI functions bind to vfio-pci at boot, by address.
+# Remove it (or undo the change in the web UI) and reboot to give them back.
+# 0000:0b:00.0: native driver nouveau
+ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:0b:00.0", ATTR{driver_override}="vfio-pci"
+# 0000:0b:00.1: native driver snd_hda_intel
+ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:0b:00.1", ATTR{driver_override}="vfio-pci"
--- /dev/null
+++ b/etc/modprobe.d/passthrough-wizard-vfio.conf
@@ -0,0 +1,4 @@
+# Written by Passthrough Wizard: these PCI functions bind to vfio-pci at boot, by address.
+softdep nouveau pre: vfio-pci
+softdep snd_hda_intel pre: vfio-pci
+install vfio-pci for a in 0000:0b:00.0 0000:0b:00.1; do f=/sys/bus/pci/devices/$a/driver_override; \
[ -w $f ] && echo vfio-pci > $f; done; /sbin/modprobe --ignore-install vfio-pci $CMDLINE_OPTS
--- a/etc/initramfs-tools/modules
+++ b/etc/initramfs-tools/modules
@@ -9,3 +9,6 @@
 #
 # raid1
 # sd_mod
+vfio
+vfio_iommu_type1
+vfio_pci
"""


def test_the_plan_shows_the_exact_diff_and_writes_nothing(debian):
    before = tree_digest(debian.root)

    plan = plan_persist_binding(debian, GPU)

    assert plan.diff == EXPECTED_DIFF
    assert plan.targets == [GPU, AUDIO]  # the whole group, asked for by one function
    assert plan.commands == ["update-initramfs -u -k all"]
    assert tree_digest(debian.root) == before
    assert debian.writes == [] and debian.commands == []
    assert plan.to_json()["changes"][0]["path"] == "/etc/udev/rules.d/90-passthrough-wizard-vfio.rules"


def test_apply_writes_each_file_with_a_backup_and_undo_restores_every_byte(debian):
    root = debian.root
    before = tree_digest(root)
    original = text(f"{root}/etc/initramfs-tools/modules")

    result = apply_persist_binding(debian, [GPU], fingerprint=plan_persist_binding(debian, GPU).fingerprint)

    assert result.outcome == SUCCEEDED, result.error
    assert persisted_bindings(debian) == {GPU: "nouveau", AUDIO: "snd_hda_intel"}
    backups = [name for name in os.listdir(f"{root}/etc/initramfs-tools") if name != "modules"]
    assert len(backups) == 1 and re.fullmatch(r"modules\.\d{8}T\d{6}Z\.bak", backups[0])
    assert text(f"{root}/etc/initramfs-tools/{backups[0]}") == original
    assert debian.commands == [["update-initramfs", "-u", "-k", "all"]]
    assert [step.name for step in result.steps].count("backup") == 1  # the two new files had nothing to back up
    assert result.undo["action"] == "persist_binding"
    assert {item["path"]: item["backup"] is None for item in result.undo["files"]} == {
        "/" + RULES_FILE: True,
        "/" + MODPROBE_FILE: True,
        "/etc/initramfs-tools/modules": False,
    }

    undone = undo_change(debian, result.undo)

    assert undone.outcome == SUCCEEDED, undone.error
    assert tree_digest(root) == before  # files, backups and all: byte for byte as before
    assert debian.commands[-1] == ["update-initramfs", "-u", "-k", "all"]


def test_applying_the_same_binding_again_changes_nothing(debian):
    apply_persist_binding(debian, [GPU])
    digest = tree_digest(debian.root)
    again = apply_persist_binding(debian, [AUDIO])
    assert again.outcome == UNCHANGED
    assert tree_digest(debian.root) == digest


def test_two_cards_with_identical_ids_get_separate_address_rules(make_tree):
    # A second GTX 1080 Ti where the GT 710 was: same vendor:device ids, its own group.
    spec = x570(files=debian_files())
    twin = {
        GT710.address: replace(GT710, device="1b06", boot_vga=False),
        GT710_AUDIO.address: replace(GT710_AUDIO, device="10ef"),
    }
    spec.functions = [twin.get(function.address, function) for function in spec.functions]
    kernel = KernelDouble(make_tree(spec))

    apply_persist_binding(kernel, [GPU])
    rules = text(f"{kernel.root}/{RULES_FILE}")
    assert re.findall(r'KERNEL=="([^"]+)"', rules) == [GPU, AUDIO]  # the twin stays with the host

    apply_persist_binding(kernel, [GT710.address])
    rules = text(f"{kernel.root}/{RULES_FILE}")
    assert re.findall(r'KERNEL=="([^"]+)"', rules) == [GPU, AUDIO, GT710.address, GT710_AUDIO.address]
    written = rules + text(f"{kernel.root}/{MODPROBE_FILE}")
    assert "10de" not in written and "ids=" not in written  # by address only, never by id


def test_unpersisting_the_last_group_deletes_the_files(debian):
    apply_persist_binding(debian, [GPU])
    plan = plan_unpersist_binding(debian, [GPU, AUDIO])
    assert "+++ /dev/null" in plan.diff
    result = apply_unpersist_binding(debian, [GPU, AUDIO])
    assert result.outcome == SUCCEEDED
    assert not os.path.exists(f"{debian.root}/{RULES_FILE}")
    assert persisted_bindings(debian) == {}
    assert "vfio_pci" in text(f"{debian.root}/etc/initramfs-tools/modules")  # harmless, left in place


def test_unpersisting_one_function_of_a_card_stops_its_whole_group_and_says_so(debian):
    apply_persist_binding(debian, [GPU])
    plan = plan_unpersist_binding(debian, [AUDIO])
    assert plan.targets == [AUDIO, GPU]
    assert f"{GPU} stops being bound at boot too" in " ".join(plan.notes)
    apply_unpersist_binding(debian, [AUDIO])
    assert persisted_bindings(debian) == {}  # no half card left on vfio-pci at the next boot


def test_a_plan_made_stale_by_an_edit_is_refused(debian):
    plan = plan_persist_binding(debian, GPU)
    with open(f"{debian.root}/etc/initramfs-tools/modules", "a") as handle:
        handle.write("nvme\n")
    digest = tree_digest(debian.root)
    with pytest.raises(FileChangedSinceApply):
        apply_persist_binding(debian, [GPU], fingerprint=plan.fingerprint)
    assert tree_digest(debian.root) == digest


def test_undo_keeps_a_file_edited_since_unless_forced(debian):
    result = apply_persist_binding(debian, [GPU])
    with open(f"{debian.root}/{RULES_FILE}", "a") as handle:
        handle.write("# my own note\n")
    with pytest.raises(FileChangedSinceApply, match="changed after it was applied"):
        undo_change(debian, result.undo)
    assert undo_change(debian, result.undo, force=True).outcome == SUCCEEDED
    assert not os.path.exists(f"{debian.root}/{RULES_FILE}")


@pytest.mark.parametrize(
    "altered",
    [
        {"path": "/etc/shadow", "backup": None, "sha256_after": None},
        {"path": "/etc/initramfs-tools/modules", "backup": "/etc/shadow", "sha256_after": None},
        {"path": "/etc/modprobe.d/../shadow.conf", "backup": None, "sha256_after": None},
        "not a file",
    ],
)
def test_an_altered_undo_record_is_refused(debian, altered):
    result = apply_persist_binding(debian, [GPU])
    digest = tree_digest(debian.root)
    record = {**result.undo, "files": result.undo["files"] + [altered]}
    with pytest.raises(InvalidRequest):
        undo_change(debian, record)
    with pytest.raises(InvalidRequest):
        undo_change(debian, {"action": "rm -rf /", "files": []})
    assert tree_digest(debian.root) == digest


def test_a_failing_initramfs_rebuild_puts_every_file_back(debian):
    debian.inject(faults.command_fails("update-initramfs *", returncode=1))
    before = tree_digest(debian.root)

    result = apply_persist_binding(debian, [GPU])

    assert result.outcome == ROLLED_BACK
    assert "update-initramfs -u -k all` exited with 1" in result.error["message"]
    assert tree_digest(debian.root) == before
    assert result.undo is None


def test_the_boot_gpu_needs_confirmation_to_bind_at_boot(make_tree):
    kernel = KernelDouble(make_tree(x570(console="efifb", files=debian_files())))
    with pytest.raises(ConfirmationRequired):
        plan_persist_binding(kernel, GT710.address)
    assert plan_persist_binding(kernel, GT710.address, confirm=GT710.address).changes


def test_a_native_driver_given_for_a_function_already_on_vfio_is_used(debian):
    from passthrough.ops import bind_vfio

    bind_vfio(debian, GPU)
    plan = plan_persist_binding(debian, GPU)
    assert len(plan.notes) == 2 and "softdep" not in plan.changes[1].after.split("install")[0]
    plan = plan_persist_binding(debian, GPU, native_drivers={GPU: "nouveau", AUDIO: "snd_hda_intel"})
    assert plan.notes == []
    assert "softdep nouveau pre: vfio-pci" in plan.changes[1].after


def test_a_binding_by_id_elsewhere_is_pointed_out(make_tree):
    kernel = KernelDouble(make_tree(x570(files=debian_files(**{"etc/modprobe.d/vfio.conf": PROXMOX_VFIO_CONF}))))
    plan = plan_persist_binding(kernel, GPU)
    assert any("options vfio-pci ids=" in note for note in plan.notes)


# Fedora with dracut (schplorg-vfio-t480: its /etc/default/grub and /etc/dracut.conf.d/vfio.conf) ----
FEDORA_GRUB = (
    "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\nGRUB_DEFAULT=saved\n"
    'GRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT="console"\n'
    'GRUB_CMDLINE_LINUX="resume=UUID=3ef73561-0e32-443a-97d9-824131006fd4 rhgb quiet iommu=1 intel_iommu=on '
    'rd.driver.pre=vfio-pci rd.driver.blacklist=nouveau,thunderbolt"\nGRUB_DISABLE_RECOVERY="true"\n'
)
FEDORA_FILES = {
    "etc/os-release": 'NAME=Fedora\nVERSION="28 (Workstation Edition)"\nID=fedora\nVERSION_ID=28\n',
    "etc/default/grub": FEDORA_GRUB,
    "etc/dracut.conf.d/vfio.conf": 'add_drivers+="vfio vfio_iommu_type1 vfio_pci vfio_virqfd"\n',
    "usr/bin/dracut": "",
    "usr/sbin/grub2-mkconfig": "",
}


def fedora(**overrides: object):
    return x570(files=FEDORA_FILES, osrelease="4.18.17-200.fc28.x86_64", **overrides)  # its `uname -r`


def test_on_fedora_the_vfio_modules_are_forced_into_the_dracut_image(make_tree):
    kernel = KernelDouble(make_tree(fedora()))

    result = apply_persist_binding(kernel, [GPU])

    assert result.outcome == SUCCEEDED
    dracut = text(f"{kernel.root}/etc/dracut.conf.d/vfio.conf")
    assert dracut == FEDORA_FILES["etc/dracut.conf.d/vfio.conf"] + 'force_drivers+=" vfio vfio_iommu_type1 vfio_pci "\n'
    assert kernel.commands == [["dracut", "-f", "--regenerate-all"]]


def test_a_kernel_parameter_goes_into_fedoras_grub_and_back_out(make_tree):
    kernel = KernelDouble(make_tree(fedora()))
    before = tree_digest(kernel.root)

    plan = plan_kernel_cmdline(kernel, add=["video=efifb:off"])
    result = apply_kernel_cmdline(kernel, add=["video=efifb:off"], fingerprint=plan.fingerprint)

    assert result.outcome == SUCCEEDED, result.error
    assert 'rd.driver.blacklist=nouveau,thunderbolt video=efifb:off"' in text(f"{kernel.root}/etc/default/grub")
    assert kernel.commands == [["grub2-mkconfig", "-o", "/boot/grub2/grub.cfg"]]
    assert undo_change(kernel, result.undo).outcome == SUCCEEDED
    assert tree_digest(kernel.root) == before


# The kernel command line ------------------------------------------------------------------
def test_the_grub_diff_adds_the_parameter_where_grub_reads_it(make_tree):
    kernel = KernelDouble(
        make_tree(
            x570(
                files=debian_files(
                    **{
                        "etc/default/grub": 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n'
                    }
                )
            )
        )
    )

    plan = plan_kernel_cmdline(kernel, add=["amd_iommu=on", "iommu=pt"])

    assert plan.diff == (
        "--- a/etc/default/grub\n+++ b/etc/default/grub\n@@ -1,3 +1,3 @@\n GRUB_DEFAULT=0\n"
        '-GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n+GRUB_CMDLINE_LINUX_DEFAULT="quiet amd_iommu=on iommu=pt"\n'
        ' GRUB_CMDLINE_LINUX=""\n'
    )
    assert plan.commands == ["update-grub"]


def test_parameters_already_on_the_proxmox_grub_line_change_nothing(debian):
    plan = plan_kernel_cmdline(debian, add=["intel_iommu=on", "iommu=pt"])
    assert plan.changes == [] and plan.commands == []
    assert apply_kernel_cmdline(debian, add=["intel_iommu=on"]).outcome == UNCHANGED


def test_proxmox_systemd_boot_edits_etc_kernel_cmdline_and_refreshes(make_tree):
    files = {
        "etc/os-release": DEBIAN,
        "etc/kernel/cmdline": "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n",
        "etc/kernel/proxmox-boot-uuids": "3A1B-2C4D\n",
        "usr/sbin/proxmox-boot-tool": "",
    }
    kernel = KernelDouble(make_tree(x570(files=files)))

    result = apply_kernel_cmdline(kernel, add=["amd_iommu=on"])

    assert result.outcome == SUCCEEDED, result.error
    assert text(f"{kernel.root}/etc/kernel/cmdline") == "root=ZFS=rpool/ROOT/pve-1 boot=zfs amd_iommu=on\n"
    assert kernel.commands == [["proxmox-boot-tool", "refresh"]]


@pytest.mark.parametrize("add", [["quiet splash"], ["a=b;reboot"], [7], "intel_iommu=on", []])
def test_bad_kernel_parameters_are_refused(debian, add):
    with pytest.raises(PassthroughError) as caught:
        plan_kernel_cmdline(debian, add=add)
    assert caught.value.code in ("invalid_request", "invalid_kernel_parameter")


def test_a_host_with_no_known_boot_loader_is_told_so(make_tree):
    kernel = KernelDouble(make_tree(x570(files={"etc/os-release": DEBIAN})))
    with pytest.raises(BootConfigUnsupported, match="no GRUB, systemd-boot"):
        plan_kernel_cmdline(kernel, add=["intel_iommu=on"])


# The initramfs --------------------------------------------------------------------------
def test_rebuilding_the_initramfs_runs_the_hosts_generator(make_tree):
    arch = {
        "etc/os-release": "NAME=Arch Linux\nID=arch\n",
        "usr/bin/mkinitcpio": "",
        "etc/mkinitcpio.conf": "MODULES=()\n",
    }
    kernel = KernelDouble(make_tree(x570(files=arch)))
    result = apply_rebuild_initramfs(kernel)
    assert result.outcome == SUCCEEDED
    assert kernel.commands == [["mkinitcpio", "-P"]]
    assert result.undo is None


def test_commands_are_not_run_for_a_captured_tree(make_tree):
    tree = HostTree(make_tree(x570(files=debian_files())))
    result = apply_persist_binding(tree, [GPU])
    assert result.outcome == SUCCEEDED
    assert any("was not run" in warning for warning in result.warnings)
