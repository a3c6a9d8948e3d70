"""Hosts for the capture tests, and the tree comparisons they need.

Each host is a :class:`HostSpec` plus what ``write_tree`` does not lay out itself
(device-mapper over a partition, AMD IOMMU units under their PCI function), written the
way the kernel shows them in sysfs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from passthrough.host import HostTree
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.hosttrees.tree import write_tree
from passthrough.pci.scan import scan

GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=on iommu=pt"\n'
HWLOC_TARBALLS = Path(__file__).resolve().parent / "data" / "capture"  # see PROVENANCE.txt there


def workstation(console: str = "efifb") -> HostSpec:
    """Intel desktop turned Proxmox host: GPU + HDMI audio behind a root port, an I350 with
    two VFs, root filesystem on NVMe, the default route through vmbr0 on the I350."""
    f = FunctionSpec
    link = ("8.0 GT/s PCIe", 16, "8.0 GT/s PCIe", 16)
    functions = [
        f("0000:00:00.0", "8086", "3e30", "060000", iommu_group=0),
        f("0000:00:01.0", "8086", "1901", "060400", driver="pcieport", iommu_group=1),
        f("0000:01:00.0", "10de", "1d01", "030000", driver="nouveau", iommu_group=1, parent="0000:00:01.0",
          boot_vga=True, reset_methods=["bus"], link=link, subsystem_vendor="1462", subsystem_device="8c98"),
        f("0000:01:00.1", "10de", "0fb8", "040300", driver="snd_hda_intel", iommu_group=1, parent="0000:00:01.0",
          reset_methods=["bus"]),
        f("0000:00:1c.0", "8086", "a33c", "060400", driver="pcieport", iommu_group=2),
        f("0000:03:00.0", "8086", "1521", "020000", driver="igb", iommu_group=3, parent="0000:00:1c.0",
          sriov_totalvfs=7, sriov_numvfs=2, reset_methods=["flr", "bus"], numa_node=0),
        f("0000:03:10.0", "8086", "1520", "020000", driver="igbvf", iommu_group=4, physfn="0000:03:00.0",
          reset_methods=["flr"]),
        f("0000:03:10.4", "8086", "1520", "020000", driver="vfio-pci", iommu_group=5, physfn="0000:03:00.0",
          reset_methods=["flr"], driver_override="vfio-pci"),
        f("0000:00:1d.0", "8086", "a330", "060400", driver="pcieport", iommu_group=6),
        f("0000:04:00.0", "144d", "a808", "010802", driver="nvme", iommu_group=7, parent="0000:00:1d.0",
          has_reset=True, link=("8.0 GT/s PCIe", 4, "8.0 GT/s PCIe", 4)),
        f("0000:00:1f.0", "8086", "a305", "060100", iommu_group=8),
        f("0000:00:1f.4", "8086", "a323", "0c0500", driver="i801_smbus", iommu_group=8),
    ]  # fmt: skip
    return HostSpec(
        functions=functions,
        iommu="intel",
        iommu_units={
            "dmar0": ["0000:01:00.0", "0000:01:00.1"],
            "dmar1": [fn.address for fn in functions if not fn.address.startswith("0000:01:")],
        },
        cmdline="BOOT_IMAGE=/boot/vmlinuz-6.8.12-4-pve root=/dev/nvme0n1p2 ro quiet intel_iommu=on iommu=pt",
        modules=("vfio_pci", "vfio_pci_core", "vfio_iommu_type1", "vfio", "kvm_intel", "kvm"),
        dev_vfio=("vfio", "5"),
        console=console,
        block_devices={"nvme0n1": "0000:04:00.0"},
        root_source="/dev/nvme0n1p2",
        net_devices={"enp3s0f0": "0000:03:00.0", "enp3s16": "0000:03:10.0"},
        net_bridges={"vmbr0": ["enp3s0f0"]},
        default_route="vmbr0",
        files={
            "etc/default/grub": GRUB,
            "etc/modprobe.d/vfio.conf": "options vfio-pci ids=10de:1d01,10de:0fb8\n",
            "etc/modules": "vfio\nvfio_iommu_type1\nvfio_pci\n",
            "etc/kernel/cmdline": "root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on\n",
            "usr/sbin/update-grub": "",
            "usr/sbin/update-initramfs": "",
            "usr/sbin/proxmox-boot-tool": "",
            "proc/sys/kernel/hostname": "pve1\n",
        },
        dmesg="[    0.000000] Linux version 6.8.12-4-pve\n[    0.512000] DMAR: IOMMU enabled\n",
    )


def amd_server() -> HostSpec:
    """Ryzen board: RX 6700 XT behind its Navi switch (GPU and audio on different buses),
    the IOMMU itself at 00:00.2, NVMe in PCI domain 10000, root on device-mapper."""
    f = FunctionSpec
    functions = [
        f("0000:00:00.0", "1022", "1480", "060000", iommu_group=0),
        f("0000:00:00.2", "1022", "1481", "080600", iommu_group=None),
        f("0000:00:01.1", "1022", "1483", "060400", driver="pcieport", iommu_group=1),
        f("0000:01:00.0", "1002", "1478", "060400", driver="pcieport", iommu_group=2, parent="0000:00:01.1"),
        f("0000:02:00.0", "1002", "1479", "060400", driver="pcieport", iommu_group=3, parent="0000:01:00.0"),
        f("0000:03:00.0", "1002", "73df", "030000", driver="amdgpu", iommu_group=4, parent="0000:02:00.0",
          boot_vga=True, reset_methods=["bus"]),
        f("0000:03:00.1", "1002", "ab28", "040300", driver="snd_hda_intel", iommu_group=5, parent="0000:02:00.0"),
        f("0000:00:02.1", "1022", "1483", "060400", driver="pcieport", iommu_group=6),
        f("0000:06:00.0", "10ec", "8125", "020000", driver="r8169", iommu_group=6, parent="0000:00:02.1"),
        f("0000:00:08.1", "1022", "1484", "060400", driver="pcieport", iommu_group=7),
        f("0000:07:00.3", "1022", "149c", "0c0330", driver="xhci_hcd", iommu_group=7, parent="0000:00:08.1"),
        f("10000:01:00.0", "8086", "f1a8", "010802", driver="nvme", iommu_group=8),
    ]  # fmt: skip
    return HostSpec(
        functions=functions,
        cpu_vendor="AuthenticAMD",
        cpu_flags=("fpu", "svm", "x2apic"),
        iommu=None,  # units are laid out by add_amd_iommu_units, under 00:00.2 as the kernel does
        modules=("kvm_amd", "kvm"),
        console="native",
        block_devices={"nvme0n1": "10000:01:00.0"},
        root_source="/dev/nvme0n1p2",
        net_devices={"enp6s0": "0000:06:00.0"},
        default_route="enp6s0",
        files={"etc/kernel/cmdline": "root=/dev/mapper/pve-root amd_iommu=on\n", "usr/bin/bootctl": ""},
    )


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(target, path.parent))


def add_amd_iommu_units(root: Path, units: dict[str, list[str]], iommu_function: str = "0000:00:00.2") -> None:
    """``sys/class/iommu/ivhdN -> ../../devices/pci0000:00/0000:00:00.2/iommu/ivhdN``, as on AMD hosts."""
    sys_dir = root / "sys"
    function_dir = Path(os.path.realpath(sys_dir / "bus/pci/devices" / iommu_function))
    for unit, addresses in units.items():
        unit_dir = function_dir / "iommu" / unit
        (unit_dir / "amd-iommu").mkdir(parents=True)
        (unit_dir / "amd-iommu/cap").write_text("0x00203040\n")
        (unit_dir / "amd-iommu/features").write_text("0x246577efa2254afa\n")
        _link(sys_dir / "class/iommu" / unit, unit_dir)
        for address in addresses:
            device_dir = Path(os.path.realpath(sys_dir / "bus/pci/devices" / address))
            _link(unit_dir / "devices" / address, device_dir)
            _link(device_dir / "iommu", unit_dir)


def put_root_on_device_mapper(root: Path, partition: str, name: str = "pve-root") -> None:
    """Root filesystem on /dev/mapper/<name> (dm-0, 253:0) whose slave is ``partition``."""
    sys_dir = root / "sys"
    dm = sys_dir / "devices/virtual/block/dm-0"
    (dm / "dm").mkdir(parents=True)
    (dm / "dev").write_text("253:0\n")
    (dm / "dm/name").write_text(name + "\n")
    _link(dm / "slaves" / partition, Path(os.path.realpath(sys_dir / "class/block" / partition)))
    for entry in ("block/dm-0", "class/block/dm-0", "dev/block/253:0"):
        _link(sys_dir / entry, dm)
    (root / "proc/self/mountinfo").write_text(
        f"22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/{name} rw\n"
        "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n"
    )
    (root / "proc/mounts").write_text(f"/dev/mapper/{name} / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n")


def build_amd_server(root: Path) -> Path:
    spec = amd_server()
    write_tree(spec, root)
    grouped = [fn.address for fn in spec.functions if fn.iommu_group is not None]
    add_amd_iommu_units(root, {"ivhd0": grouped[:6], "ivhd1": grouped[6:]})
    put_root_on_device_mapper(root, "nvme0n1p2")
    return root


def extract_hwloc(name: str, dest: Path) -> Path:
    """A real machine's sysfs from hwloc's test captures; returns the tree's root.

    CPU and memory topology (``sys/devices/system``, half the archive) is left packed:
    a capture never looks there, and writing it out doubles the test's time.
    """
    with tarfile.open(HWLOC_TARBALLS / f"{name}.tar.bz2") as archive:
        members = [member for member in archive.getmembers() if "/sys/devices/system/" not in member.name]
        archive.extractall(dest, members=members, filter="tar")
    (top,) = [entry for entry in dest.iterdir() if entry.is_dir()]
    return top


def listing(root: Path) -> dict[str, Any]:
    """Every path under ``root``: file bytes, where a link resolves (relative to root), or "dir"."""
    found: dict[str, Any] = {}
    real_root = os.path.realpath(root)
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = ("link", os.path.relpath(os.path.realpath(path), real_root))
            elif os.path.isdir(path):
                found[rel] = "dir"
            else:
                found[rel] = ("file", Path(path).read_bytes())
    return found


def lspci(root: Path) -> str:
    """What ``lspci -nnkD`` prints for the tree; skips the calling test where pciutils is missing."""
    if shutil.which("lspci") is None:
        pytest.skip("lspci is not installed (Debian package pciutils)")
    result = subprocess.run(
        ["lspci", "-nnkD", "-A", "linux-sysfs", "-O", f"sysfs.path={root}/sys/bus/pci"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


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
