"""Host-critical devices: the boot console, the root disk's controller, the default-route NIC."""

import os

import pytest

from passthrough.host import HostTree
from passthrough.hosttrees.spec import FunctionSpec, HostSpec
from passthrough.pci.hostcritical import console_on, default_route_nics, find_host_critical, root_filesystem_controllers
from passthrough.pci.scan import scan

IGPU = FunctionSpec("0000:00:02.0", "8086", "3e92", "030000", driver="i915", iommu_group=0, boot_vga=True)
DGPU = FunctionSpec("0000:01:00.0", "10de", "1d01", "030000", driver="nouveau", iommu_group=2, boot_vga=False)
NVME = FunctionSpec("0000:05:00.0", "15b7", "5009", "010802", driver="nvme", iommu_group=14)
NIC = FunctionSpec("0000:03:00.0", "8086", "1539", "020000", driver="igb", iommu_group=12)
NIC2 = FunctionSpec("0000:04:00.0", "8086", "1539", "020000", driver="igb", iommu_group=13)


def _host(**kwargs) -> HostSpec:
    return HostSpec(functions=[IGPU, DGPU, NVME, NIC, NIC2], **kwargs)


@pytest.mark.parametrize("console", ["efifb", "vesafb", "simpledrm", "native", "vgacon"])
def test_boot_vga_with_a_console_on_it_is_host_critical(make_tree, console):
    tree = HostTree(make_tree(_host(console=console)))
    reasons = console_on(tree, "0000:00:02.0")
    assert reasons, console
    assert "0000:01:00.0" not in find_host_critical(tree, scan(tree).devices)


def test_boot_vga_without_any_console_is_not_host_critical(make_tree):
    # A headless server booted with video=efifb:off and no fbcon: nothing is drawn on it.
    tree = HostTree(make_tree(_host(console=None)))
    assert console_on(tree, "0000:00:02.0") == []
    assert "0000:00:02.0" not in scan(tree).host_critical


def test_root_filesystem_on_an_nvme_partition_marks_its_controller(make_tree):
    tree = HostTree(make_tree(_host(block_devices={"nvme0n1": NVME.address}, root_source="/dev/nvme0n1p2")))
    [(address, reason)] = root_filesystem_controllers(tree)
    assert address == NVME.address
    assert "/dev/nvme0n1p2" in reason


def test_root_through_device_mapper_is_traced_to_the_disk_controller(make_tree):
    root = make_tree(_host(block_devices={"nvme0n1": NVME.address}))
    # LVM: dm-0 ("pve-root") over nvme0n1p3, mounted on /, as Proxmox installs it.
    disk = os.path.realpath(root / "sys/class/block/nvme0n1p2")
    dm = root / "sys/devices/virtual/block/dm-0"
    (dm / "dm").mkdir(parents=True)
    (dm / "dm/name").write_text("pve-root\n")
    (dm / "dev").write_text("253:0\n")
    (dm / "slaves").mkdir()
    os.symlink(os.path.relpath(disk, dm / "slaves"), dm / "slaves/nvme0n1p2")
    for link in ("sys/class/block/dm-0", "sys/block/dm-0", "sys/dev/block/253:0"):
        os.symlink(os.path.relpath(dm, (root / link).parent), root / link)
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    (root / "proc/self/mountinfo").write_text("25 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/pve-root rw\n")
    tree = HostTree(root)
    assert [address for address, _ in root_filesystem_controllers(tree)] == [NVME.address]
    # /proc/mounts alone (no mountinfo) still resolves /dev/mapper names.
    os.remove(root / "proc/self/mountinfo")
    (root / "proc/mounts").write_text("/dev/mapper/pve-root / ext4 rw 0 0\n")
    assert [address for address, _ in root_filesystem_controllers(tree)] == [NVME.address]


def test_a_root_mounted_as_dev_root_resolves_through_major_minor(make_tree):
    root = make_tree(_host(block_devices={"nvme0n1": NVME.address}))
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    dev = (root / "sys/class/block/nvme0n1p2/dev").read_text().strip()
    (root / "proc/self/mountinfo").write_text(f"22 1 {dev} / / rw - ext4 /dev/root rw\n")
    assert [address for address, _ in root_filesystem_controllers(HostTree(root))] == [NVME.address]


def test_a_root_that_cannot_be_traced_marks_nothing(make_tree):
    root = make_tree(_host(block_devices={"nvme0n1": NVME.address}))
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    (root / "proc/self/mountinfo").write_text("22 1 0:27 / / rw - zfs rpool/ROOT/pve-1 rw\n")
    assert root_filesystem_controllers(HostTree(root)) == []


def test_the_default_route_nic_behind_a_proxmox_bridge_is_host_critical(make_tree):
    tree = HostTree(
        make_tree(
            _host(
                net_devices={"enp3s0": NIC.address, "enp4s0": NIC2.address},
                net_bridges={"vmbr0": ["enp3s0"]},
                default_route="vmbr0",
            )
        )
    )
    assert default_route_nics(tree) == [(NIC.address, "it carries the default route (vmbr0 → enp3s0)")]
    assert NIC2.address not in scan(tree).host_critical


def test_a_bond_marks_every_slave(make_tree):
    root = make_tree(_host(net_devices={"enp3s0": NIC.address, "enp4s0": NIC2.address}))
    bond = root / "sys/devices/virtual/net/bond0"
    (bond / "bonding").mkdir(parents=True)
    (bond / "bonding/slaves").write_text("enp3s0 enp4s0\n")
    os.symlink(os.path.relpath(bond, root / "sys/class/net"), root / "sys/class/net/bond0")
    (root / "proc/net").mkdir(parents=True, exist_ok=True)
    (root / "proc/net/route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\nbond0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    assert sorted(address for address, _ in default_route_nics(HostTree(root))) == [NIC.address, NIC2.address]


def test_an_ipv6_only_default_route_counts(make_tree):
    root = make_tree(_host(net_devices={"enp3s0": NIC.address}))
    (root / "proc/net").mkdir(parents=True, exist_ok=True)
    (root / "proc/net/ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 enp3s0\n"
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n"
    )
    assert [address for address, _ in default_route_nics(HostTree(root))] == [NIC.address]


def test_a_tree_without_any_of_these_files_marks_nothing(make_tree):
    tree = HostTree(make_tree(HostSpec(functions=[NVME, NIC])))
    assert find_host_critical(tree, scan(tree).devices) == {}
