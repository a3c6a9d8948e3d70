"""capture(): a recorded host reads back, through --root, exactly as the host itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from passthrough.bootconfig import detect_bootloader
from passthrough.capture import capture
from passthrough.errors import NotAHostTree, PassthroughError
from passthrough.host import HostTree
from passthrough.inventory import scan
from passthrough.treebuilder import HostSpec
from tests.capture_hosts import (
    build_amd_server,
    extract_hwloc,
    listing,
    lspci,
    put_root_on_device_mapper,
    workstation,
)

REPO = Path(__file__).resolve().parent.parent


def scanned(root: Path | str) -> dict[str, Any]:
    """scan() as JSON, minus the one field that names where the tree lives."""
    data = scan(HostTree(root)).to_json()
    data.pop("root")
    return data


def absolute_links(root: Path) -> list[str]:
    return [
        os.path.join(directory, name)
        for directory, dirnames, filenames in os.walk(root)
        for name in dirnames + filenames
        if os.path.islink(os.path.join(directory, name)) and os.readlink(os.path.join(directory, name)).startswith("/")
    ]


@pytest.fixture
def built_host(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> Callable[[str], Path]:
    """Source trees by name, each with host-critical findings the capture must keep."""

    def build(name: str) -> Path:
        if name == "amd":
            return build_amd_server(tmp_path / "amd")
        if name == "simpledrm-root-on-dm":
            on_dm = make_tree(workstation("simpledrm"))
            put_root_on_device_mapper(on_dm, "nvme0n1p2")
            return on_dm
        return make_tree(workstation(name))

    return build


EXPECTED_HOST_CRITICAL = {
    "efifb": {"0000:01:00.0", "0000:03:00.0", "0000:04:00.0"},
    "vgacon": {"0000:01:00.0", "0000:03:00.0", "0000:04:00.0"},
    "simpledrm-root-on-dm": {"0000:01:00.0", "0000:03:00.0", "0000:04:00.0"},
    "amd": {"0000:03:00.0", "0000:06:00.0", "10000:01:00.0"},
}


# Round trips over built hosts ----------------------------------------------------------
@pytest.mark.parametrize("host", sorted(EXPECTED_HOST_CRITICAL))
def test_a_captured_host_scans_exactly_like_its_source(
    built_host: Callable[[str], Path], tmp_path: Path, host: str
) -> None:
    source = built_host(host)
    before = scanned(source)
    assert set(before["host_critical"]) == EXPECTED_HOST_CRITICAL[host]  # the source really has the evidence
    assert before["groups"]

    capture(HostTree(source), tmp_path / "capture")

    assert scanned(tmp_path / "capture") == before


@pytest.mark.parametrize("host", sorted(EXPECTED_HOST_CRITICAL))
def test_a_captured_host_keeps_every_file_and_link_of_its_source(
    built_host: Callable[[str], Path], tmp_path: Path, host: str
) -> None:
    """Built trees hold only what a capture records, so nothing may be missing or differ."""
    source = built_host(host)
    capture(HostTree(source), tmp_path / "capture")

    recorded = listing(tmp_path / "capture")
    recorded.pop("capture.json")
    assert recorded == listing(source)


def readiness_report(root: Path | str) -> dict[str, Any]:
    readiness = pytest.importorskip("passthrough.readiness", reason="passthrough.readiness is not in this checkout")
    data = readiness.report(HostTree(root))
    data.pop("root")
    return data


@pytest.mark.parametrize("host", ["efifb", "amd"])
def test_a_captured_host_gets_the_same_readiness_report(
    built_host: Callable[[str], Path], tmp_path: Path, host: str
) -> None:
    source = built_host(host)
    expected = readiness_report(source)

    capture(HostTree(source), tmp_path / "capture")

    assert readiness_report(tmp_path / "capture") == expected


def test_a_capture_can_be_moved_and_still_reads_the_same(built_host: Callable[[str], Path], tmp_path: Path) -> None:
    capture(HostTree(built_host("amd")), tmp_path / "capture")
    expected = scanned(tmp_path / "capture")

    moved = tmp_path / "elsewhere" / "deeper" / "bug-1234"
    moved.parent.mkdir(parents=True)
    shutil.move(tmp_path / "capture", moved)

    assert scanned(moved) == expected
    assert set(expected["host_critical"]) == EXPECTED_HOST_CRITICAL["amd"]
    assert absolute_links(moved) == []


def test_a_capture_of_a_capture_is_the_same_tree(built_host: Callable[[str], Path], tmp_path: Path) -> None:
    capture(HostTree(built_host("simpledrm-root-on-dm")), tmp_path / "first")
    capture(HostTree(tmp_path / "first"), tmp_path / "second")

    first, second = listing(tmp_path / "first"), listing(tmp_path / "second")
    assert json.loads(second.pop("capture.json")[1])["hostname"] == "pve1"
    first.pop("capture.json")
    assert second == first


def test_iommu_units_resolve_to_the_same_places_as_in_the_source(
    built_host: Callable[[str], Path], tmp_path: Path
) -> None:
    for host in ("efifb", "amd"):
        source, dest = built_host(host), tmp_path / "captures" / host
        dest.parent.mkdir(exist_ok=True)
        capture(HostTree(source), dest)
        units = sorted(os.listdir(source / "sys/class/iommu"))
        assert units and sorted(os.listdir(dest / "sys/class/iommu")) == units
        for unit in units:
            where = HostTree(source).realpath(f"sys/class/iommu/{unit}")
            assert HostTree(dest).realpath(f"sys/class/iommu/{unit}") == where
            assert sorted(os.listdir(dest / where / "devices")) == sorted(os.listdir(source / where / "devices"))
    assert "/0000:00:00.2/iommu/ivhd0" in HostTree(tmp_path / "captures/amd").realpath("sys/class/iommu/ivhd0")


def test_lspci_prints_the_same_for_the_capture_as_for_the_source(
    built_host: Callable[[str], Path], tmp_path: Path
) -> None:
    (tmp_path / "captures").mkdir()
    for host in ("efifb", "amd"):
        source = built_host(host)
        capture(HostTree(source), tmp_path / "captures" / host)
        expected = lspci(source)
        assert "Kernel driver in use: vfio-pci" in expected or host == "amd"
        assert lspci(tmp_path / "captures" / host) == expected


# Real machines ---------------------------------------------------------------------------
@pytest.mark.parametrize("machine", ["32intel64-2p8co2t+8ve", "2pa-pcidomain32bits"])
def test_a_real_machines_sysfs_round_trips(tmp_path: Path, machine: str) -> None:
    """hwloc's captures of real sysfs trees (PLX switches and a PCI domain 10000 in a VM)."""
    source = extract_hwloc(machine, tmp_path / "source")
    before = scanned(source)
    assert len(before["devices"]) >= 2

    capture(HostTree(source), tmp_path / "capture")

    assert scanned(tmp_path / "capture") == before
    assert lspci(tmp_path / "capture") == lspci(source)
    assert absolute_links(tmp_path / "capture") == []
    for directory in ("sys/class/net", "sys/class/block"):
        entries = sorted(os.listdir(source / directory)) if (source / directory).is_dir() else []
        recorded = tmp_path / "capture" / directory
        assert sorted(os.listdir(recorded)) == entries if entries else not recorded.exists()
        for name in entries:  # each still resolves to its place under its PCI function
            relative = f"{directory}/{name}"
            assert HostTree(tmp_path / "capture").realpath(relative) == HostTree(source).realpath(relative)
            assert (tmp_path / "capture" / relative).is_dir() == (source / relative).is_dir()  # lo dangles in one


# The live host -----------------------------------------------------------------------------
live_pci = pytest.mark.skipif(
    not os.listdir("/sys/bus/pci/devices") if os.path.isdir("/sys/bus/pci/devices") else True,
    reason="this machine shows no PCI functions in /sys (a container?)",
)


@live_pci
def test_capturing_this_host_reads_back_as_this_host(tmp_path: Path) -> None:
    live = scanned("/")
    started = time.monotonic()

    summary = capture(HostTree("/"), tmp_path / "capture")

    assert time.monotonic() - started < 30
    recorded = scanned(tmp_path / "capture")
    assert [d["address"] for d in recorded["devices"]] == [d["address"] for d in live["devices"]]
    assert recorded == live
    assert summary.functions == len(live["devices"])
    assert absolute_links(tmp_path / "capture") == []
    assert lspci(tmp_path / "capture") == subprocess.run(["lspci", "-nnkD"], capture_output=True, text=True).stdout
    assert readiness_report(tmp_path / "capture") == readiness_report("/")


@live_pci
def test_capturing_this_host_keeps_its_host_critical_findings(tmp_path: Path) -> None:
    live = scan(HostTree("/"))
    if not live.host_critical:
        pytest.skip("this host has no host-critical PCI function (no PCI root disk or default route)")

    capture(HostTree("/"), tmp_path / "capture")

    assert scan(HostTree(tmp_path / "capture")).host_critical == live.host_critical


def _interpreter_for_nobody() -> str | None:
    """A Python >= 3.11 that the user nobody may run (the venv's may live under /root)."""
    if os.geteuid() != 0 or not shutil.which("runuser"):
        return None
    for candidate in (sys.executable, "/usr/bin/python3"):
        check = subprocess.run(
            ["runuser", "-u", "nobody", "--", candidate, "-c", "import sys; assert sys.version_info >= (3, 11)"],
            capture_output=True,
            timeout=30,
        )
        if check.returncode == 0:
            return candidate
    return None


@live_pci
def test_an_unprivileged_capture_of_this_host_completes_with_what_it_can_read() -> None:
    python = _interpreter_for_nobody()
    if python is None:
        pytest.skip("needs root, runuser and a Python 3.11 the user nobody can run")
    code = "import sys; from passthrough.capture import capture; from passthrough.host import HostTree; " + (
        "capture(HostTree('/'), sys.argv[1])"
    )
    with tempfile.TemporaryDirectory() as shared:  # pytest's tmp_path is closed to other users
        os.chmod(shared, 0o777)
        dest = Path(shared) / "capture"
        result = subprocess.run(
            ["runuser", "-u", "nobody", "--", "env", f"PYTHONPATH={REPO}", "PYTHONDONTWRITEBYTECODE=1"]
            + [python, "-c", code, str(dest)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr

        summary = json.loads((dest / "capture.json").read_text())
        assert summary["privileged"] is False
        first = scan(HostTree("/")).devices[0].address
        assert (dest / "sys/bus/pci/devices" / first / "config").stat().st_size == 64  # what non-root may read
        assert [d["address"] for d in scanned(dest)["devices"]] == [d["address"] for d in scanned("/")["devices"]]


# What is read and what never is ----------------------------------------------------------
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


# Bad destinations and failures -------------------------------------------------------------
def _siblings(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.parent.iterdir())


def test_a_non_empty_destination_is_refused_and_left_alone(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    source = make_tree(workstation())
    dest = tmp_path / "reports" / "bug"
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_text("mine\n")

    with pytest.raises(PassthroughError, match=r"is not empty \(1 entry: notes.txt\)") as raised:
        capture(HostTree(source), dest)

    assert raised.value.path == str(dest)
    assert os.listdir(dest) == ["notes.txt"] and (dest / "notes.txt").read_text() == "mine\n"
    assert _siblings(dest) == ["bug"]


def test_a_destination_that_is_a_file_or_has_no_parent_is_refused(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path
) -> None:
    source = HostTree(make_tree(workstation()))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PassthroughError, match="exists and is not a directory"):
        capture(source, tmp_path / "a-file")
    with pytest.raises(PassthroughError, match="does not exist"):
        capture(source, tmp_path / "missing" / "capture")
    assert not (tmp_path / "missing").exists()


def test_an_empty_destination_directory_is_filled(make_tree: Callable[[HostSpec], Path], tmp_path: Path) -> None:
    source = make_tree(workstation())
    dest = tmp_path / "reports" / "empty"
    dest.mkdir(parents=True)

    capture(HostTree(source), dest)

    assert scanned(dest) == scanned(source)
    assert _siblings(dest) == ["empty"]


def test_a_source_that_is_not_a_host_tree_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(NotAHostTree, match="neither sys/ nor proc/cpuinfo"):
        capture(HostTree(tmp_path / "nothing"), tmp_path / "capture")
    assert not (tmp_path / "capture").exists()


def test_a_capture_that_fails_halfway_leaves_no_partial_tree(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from passthrough import capture as capture_module

    def broken(self: object) -> None:
        raise RuntimeError("disk pulled out")

    source = make_tree(workstation())
    monkeypatch.setattr(capture_module._Recorder, "host_critical_evidence", broken)
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "existing-empty"
    existing.mkdir()

    for dest in (out / "new", existing):
        with pytest.raises(RuntimeError, match="disk pulled out"):
            capture(HostTree(source), dest)

    assert _siblings(existing) == ["existing-empty"]  # no half tree, no staging directory
    assert os.listdir(existing) == []


def test_a_write_error_becomes_a_clear_error_and_leaves_nothing(
    make_tree: Callable[[HostSpec], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from passthrough import capture as capture_module

    real_write = capture_module._Recorder.write

    def full_disk(self: Any, rel: str, data: bytes) -> None:
        if rel.startswith("etc/"):
            raise OSError(28, "No space left on device")
        real_write(self, rel, data)

    monkeypatch.setattr(capture_module._Recorder, "write", full_disk)
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(PassthroughError, match="failed and nothing was written: .*No space left on device"):
        capture(HostTree(make_tree(workstation())), out / "capture")

    assert os.listdir(out) == []
