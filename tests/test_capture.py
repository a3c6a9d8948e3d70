"""capture(): what is recorded from a host, what never is, and what capture.json says."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from passthrough.boot.loader import detect_bootloader
from passthrough.capture.run import capture
from passthrough.host import HostTree
from passthrough.hosttrees.spec import HostSpec
from passthrough.pci.scan import scan
from tests.capture_hosts import workstation


def _function_dir(root: Path, address: str) -> Path:
    return Path(os.path.realpath(root / "sys/bus/pci/devices" / address))


def test_bar_rom_vpd_and_slow_or_identifying_attributes_are_never_read(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    never = ("resource0", "resource1_wc", "rom", "vpd", "pcie_bw", "serial_number", "unique_id")
    source = make_tree(workstation())
    gpu = _function_dir(source, "0000:01:00.0")
    for name in never:
        (gpu / name).write_bytes(b"\xff" * 4096)  # on a live host: device memory, a read that can hang, a serial

    capture(HostTree(source), tmp_path / "capture")

    recorded = _function_dir(tmp_path / "capture", "0000:01:00.0")
    assert (recorded / "vendor").read_text() == "0x10de\n"
    assert [name for name in never if (recorded / name).exists()] == []


def test_only_vfio_and_kvm_modules_are_recorded_with_their_parameters(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    spec = workstation()
    spec.files.update(
        {
            "sys/module/vfio_iommu_type1/initstate": "live\n",
            "sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts": "N\n",
            "sys/module/kvm_intel/parameters/nested": "Y\n",
            "sys/module/nvidia/initstate": "live\n",
        }
    )
    source = make_tree(spec)

    capture(HostTree(source), tmp_path / "capture")

    modules = tmp_path / "capture/sys/module"
    assert sorted(os.listdir(modules)) == ["kvm_intel", "vfio_iommu_type1"]
    assert (modules / "vfio_iommu_type1/initstate").read_text() == "live\n"
    assert (modules / "vfio_iommu_type1/parameters/allow_unsafe_interrupts").read_text() == "N\n"
    assert (modules / "kvm_intel/parameters/nested").read_text() == "Y\n"
    assert not (modules / "kvm_intel/initstate").exists()  # built in: the kernel shows no initstate


def test_write_only_reset_is_recorded_as_present_and_other_write_only_files_are_left_out(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    source = make_tree(workstation())
    nvme = _function_dir(source, "0000:04:00.0")
    for name in ("reset", "remove", "rescan"):
        (nvme / name).chmod(0o200)

    capture(HostTree(source), tmp_path / "capture")

    recorded = _function_dir(tmp_path / "capture", "0000:04:00.0")
    assert (recorded / "reset").read_bytes() == b""
    assert not (recorded / "remove").exists() and not (recorded / "rescan").exists()
    assert scan(HostTree(tmp_path / "capture")).device("0000:04:00.0").has_reset is True


def test_config_space_is_kept_up_to_4096_bytes(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> None:
    source = make_tree(workstation())
    config = _function_dir(source, "0000:01:00.0") / "config"
    extended = config.read_bytes() + bytes(range(256)) * 20  # 64 + 5120 bytes
    config.write_bytes(extended)

    capture(HostTree(source), tmp_path / "capture")

    assert (_function_dir(tmp_path / "capture", "0000:01:00.0") / "config").read_bytes() == extended[:4096]


def test_an_oversized_attribute_is_cut_at_64_kib_and_the_cut_is_reported(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    source = make_tree(workstation())
    (_function_dir(source, "0000:04:00.0") / "uevent").write_bytes(b"x" * 200_000)

    summary = capture(HostTree(source), tmp_path / "capture")

    assert (_function_dir(tmp_path / "capture", "0000:04:00.0") / "uevent").stat().st_size == 65536
    assert [s.reason for s in summary.skipped if s.path.endswith("0000:04:00.0/uevent")] == [
        "truncated to its first 65536 bytes"
    ]


def test_efivars_keep_their_names_but_never_their_contents(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    spec = workstation()
    spec.files["sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d0-aa0d-00e098032b8c"] = "\x06\x00\x00\x00\x01"
    spec.files["sys/firmware/efi/efivars/Boot0001-8be4df61-93ca-11d0-aa0d-00e098032b8c"] = "\x07\x00\x00\x00\x01HD"
    source = make_tree(spec)

    capture(HostTree(source), tmp_path / "capture")

    efivars = tmp_path / "capture/sys/firmware/efi/efivars"
    assert sorted(os.listdir(efivars)) == sorted(os.listdir(source / "sys/firmware/efi/efivars"))
    assert {(efivars / name).read_bytes() for name in os.listdir(efivars)} == {b""}


def test_systemd_boots_loader_info_keeps_its_content_and_other_efivars_do_not(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    """LoaderInfo holds only the loader's name and version, which bootconfig reads as evidence."""
    loader_info = "sys/firmware/efi/efivars/LoaderInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
    secure_boot = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d0-aa0d-00e098032b8c"
    content = b"\x06\x00\x00\x00" + "systemd-boot 252.30".encode("utf-16-le") + b"\x00\x00"
    source = make_tree(workstation())
    (source / loader_info).write_bytes(content)
    (source / secure_boot).write_bytes(b"\x06\x00\x00\x00\x01")

    summary = capture(HostTree(source), tmp_path / "capture")

    assert (tmp_path / "capture" / loader_info).read_bytes() == content
    assert (tmp_path / "capture" / secure_boot).read_bytes() == b""
    assert summary.skipped == []
    evidence = detect_bootloader(HostTree(tmp_path / "capture")).evidence
    assert ("/" + loader_info, "systemd-boot 252.30") in [(item.path, item.value) for item in evidence]


def test_an_oversized_loader_info_is_cut_at_256_bytes(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> None:
    loader_info = "sys/firmware/efi/efivars/LoaderInfo-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
    source = make_tree(workstation())
    (source / loader_info).write_bytes(b"\x06\x00\x00\x00" + "x".encode("utf-16-le") * 1000)

    summary = capture(HostTree(source), tmp_path / "capture")

    assert (tmp_path / "capture" / loader_info).stat().st_size == 256
    assert (loader_info, "truncated to its first 256 bytes") in [(s.path, s.reason) for s in summary.skipped]


def test_nothing_outside_the_recorded_lists_is_copied(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> None:
    spec = workstation()
    spec.files.update(
        {
            "etc/shadow": "root:$6$secret:19000:0:99999:7:::\n",
            "home/alice/.ssh/id_ed25519": "PRIVATE KEY\n",
            "etc/modprobe.d/notes.txt": "not a .conf file\n",
            "root/.bash_history": "history\n",
        }
    )
    source = make_tree(spec)
    (source / "etc/modprobe.d/leak.conf").symlink_to("/etc/passwd")  # leads out of the tree

    summary = capture(HostTree(source), tmp_path / "capture")

    recorded = tmp_path / "capture"
    assert not (recorded / "etc/shadow").exists()
    assert not (recorded / "home").exists() and not (recorded / "root").exists()
    assert not (recorded / "etc/modprobe.d/notes.txt").exists()
    assert not (recorded / "etc/modprobe.d/leak.conf").exists()
    assert ("etc/modprobe.d/leak.conf", "links outside the captured host") in [
        (s.path, s.reason) for s in summary.skipped
    ]
    assert (recorded / "etc/modprobe.d/vfio.conf").read_text() == spec.files["etc/modprobe.d/vfio.conf"]


def test_bootloader_and_initramfs_files_the_readers_use_are_recorded(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    spec = workstation()
    wanted = {
        "boot/efi/EFI/fedora/grub.cfg": "menuentry 'Fedora' {\n}\n",
        "boot/loader/entries/arch.conf": "title Arch\noptions root=/dev/nvme0n1p2 rw\n",
        "efi/loader/entries/pve.conf": "title Proxmox\n",
        "boot/refind_linux.conf": '"Boot" "root=/dev/nvme0n1p2 rw"\n',
        "boot/syslinux/syslinux.cfg": "LABEL linux\n  APPEND root=/dev/sda1\n",
        "etc/dracut.conf": 'add_drivers+=" vfio-pci "\n',
        "etc/default/grub.d/iommu.cfg": 'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX iommu=pt"\n',
    }
    spec.files.update(wanted)
    source = make_tree(spec)
    for marker in ("sbin/update-initramfs", "bin/dracut"):  # a system without merged /usr
        (source / marker).parent.mkdir(exist_ok=True)
        (source / marker).write_text("#!/bin/sh\n")

    capture(HostTree(source), tmp_path / "capture")

    recorded = tmp_path / "capture"
    assert {rel: (recorded / rel).read_text() for rel in wanted} == wanted
    assert (recorded / "sbin/update-initramfs").read_bytes() == b""
    assert (recorded / "bin/dracut").read_bytes() == b""
    assert (recorded / "usr/sbin/update-grub").is_file()


def test_a_link_that_leads_out_of_the_tree_is_reported_and_not_followed(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    # As in prometheus/procfs' fixture, whose E810 driver link climbs past the tree's root.
    source = make_tree(workstation())
    driver = _function_dir(source, "0000:04:00.0") / "driver"
    driver.unlink()
    driver.symlink_to("../../../../../../../../../bus/pci/drivers/nvme")

    summary = capture(HostTree(source), tmp_path / "capture")

    assert not os.path.lexists(_function_dir(tmp_path / "capture", "0000:04:00.0") / "driver")
    relative = "sys/devices/pci0000:00/0000:00:1d.0/0000:04:00.0/driver"
    assert (relative, "links outside the captured host (../../../../../../../../../bus/pci/drivers/nvme)") in [
        (s.path, s.reason) for s in summary.skipped
    ]


def test_a_fifo_among_host_files_is_skipped_without_blocking(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    source = make_tree(workstation())
    os.mkfifo(source / "etc/modprobe.d/pipe.conf")

    summary = capture(HostTree(source), tmp_path / "capture")

    assert not (tmp_path / "capture/etc/modprobe.d/pipe.conf").exists()
    assert ("etc/modprobe.d/pipe.conf", "not a regular file") in [(s.path, s.reason) for s in summary.skipped]


def test_a_masked_modprobe_file_is_recorded_empty(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> None:
    source = make_tree(workstation())
    (source / "dev").mkdir(exist_ok=True)
    (source / "dev/null").write_text("")
    (source / "etc/modprobe.d/blacklist-nouveau.conf").symlink_to("../../dev/null")

    capture(HostTree(source), tmp_path / "capture")

    masked = tmp_path / "capture/etc/modprobe.d/blacklist-nouveau.conf"
    assert masked.is_file() and masked.read_bytes() == b""


def test_modules_dep_keeps_only_the_vfio_and_kvm_lines(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> None:
    spec = workstation()
    modules = f"lib/modules/{spec.osrelease}"
    spec.files[f"{modules}/modules.dep"] = (
        "kernel/drivers/vfio/vfio.ko:\n"
        "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko\n"
        "kernel/drivers/net/ethernet/intel/igb/igb.ko: kernel/drivers/dca/dca.ko\n"
        "kernel/arch/x86/kvm/kvm-intel.ko: kernel/arch/x86/kvm/kvm.ko\n"
        "kernel/arch/x86/kvm/kvm.ko:\n"
    )
    spec.files[f"{modules}/modules.builtin"] = "kernel/drivers/vfio/vfio_iommu_type1.ko\n"
    source = make_tree(spec)

    capture(HostTree(source), tmp_path / "capture")

    recorded = tmp_path / "capture" / modules
    assert (recorded / "modules.dep").read_text() == (
        "kernel/drivers/vfio/vfio.ko:\n"
        "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko kernel/drivers/vfio/vfio.ko\n"
        "kernel/arch/x86/kvm/kvm-intel.ko: kernel/arch/x86/kvm/kvm.ko\n"
        "kernel/arch/x86/kvm/kvm.ko:\n"
    )
    assert (recorded / "modules.builtin").read_text() == spec.files[f"{modules}/modules.builtin"]


def test_capture_json_says_when_what_and_what_was_skipped(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    source = make_tree(workstation())
    os.mkfifo(source / "etc/modprobe.d/pipe.conf")

    summary = capture(HostTree(source), tmp_path / "capture")

    written = json.loads((tmp_path / "capture/capture.json").read_text())
    assert written == summary.to_json()
    assert written["hostname"] == "pve1"
    assert written["kernel"] == "6.8.12-4-pve"
    assert written["tool_version"]
    assert (written["functions"], written["groups"]) == (12, 9)
    assert written["skipped"] == [{"path": "etc/modprobe.d/pipe.conf", "reason": "not a regular file"}]
    assert written["dest"] == str(tmp_path / "capture")


def test_progress_hears_every_stage(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> None:
    lines: list[str] = []
    capture(HostTree(make_tree(workstation())), tmp_path / "capture", progress=lines.append)
    assert any("PCI functions" in line for line in lines)
    assert lines[-1].startswith("Recorded 12 functions, 9 groups")


def test_a_drivers_module_link_is_recorded_so_binding_at_boot_names_the_module(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    spec = workstation()
    spec.driver_modules.update({"nouveau": "nouveau", "igb": "igb"})
    source = make_tree(spec)

    capture(HostTree(source), tmp_path / "capture")

    drivers = tmp_path / "capture/sys/bus/pci/drivers"
    for driver in ("nouveau", "igb"):
        link = drivers / driver / "module"
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve().name == driver and link.resolve().is_dir()
        assert not any(link.resolve().iterdir())  # the module's own files are not copied
