"""Hosts the operation and kernel-double tests run on, taken from real machines.

Ids, addresses and groups come from /work/shared/fixtures/realworld (see each folder's
PROVENANCE.txt); where a listing does not say which bridge a device sits behind, the
nearest GPP bridge of its group listing is used and marked "assumed".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from passthrough.hosttrees.spec import FunctionSpec, HostSpec

# joe-p-vfio-headless: Gigabyte X570 AORUS PRO WIFI + Ryzen 9 3900X, stock grouping.
X570_BRIDGES = [
    FunctionSpec("0000:00:01.0", "1022", "1482", "060000", iommu_group=0),
    FunctionSpec("0000:00:01.1", "1022", "1483", "060400", driver="pcieport", iommu_group=1),
    FunctionSpec("0000:00:03.1", "1022", "1483", "060400", driver="pcieport", iommu_group=5),
    FunctionSpec("0000:00:03.2", "1022", "1483", "060400", driver="pcieport", iommu_group=6),
    FunctionSpec("0000:00:07.1", "1022", "1484", "060400", driver="pcieport", iommu_group=10),
]
X570_CHIPSET = [
    FunctionSpec("0000:00:14.0", "1022", "790b", "0c0500", driver="piix4_smbus", revision="61", iommu_group=15),
    FunctionSpec("0000:00:14.3", "1022", "790e", "060100", revision="51", iommu_group=15),
]
NVME = FunctionSpec(
    "0000:01:00.0",
    "1cc1",
    "5350",
    "010802",
    driver="nvme",
    iommu_group=17,
    parent="0000:00:01.1",
    reset_methods=["flr"],
)
I211 = FunctionSpec("0000:06:00.0", "8086", "1539", "020000", driver="igb", revision="03", iommu_group=28)
# GTX 1080 Ti and its HDMI audio, group 30 (behind 00:03.1: assumed).
GTX1080TI = FunctionSpec(
    "0000:0b:00.0",
    "10de",
    "1b06",
    "030000",
    revision="a1",
    driver="nouveau",
    iommu_group=30,
    parent="0000:00:03.1",
    boot_vga=False,
    reset_methods=["bus"],
)
GTX1080TI_AUDIO = FunctionSpec(
    "0000:0b:00.1",
    "10de",
    "10ef",
    "040300",
    revision="a1",
    driver="snd_hda_intel",
    iommu_group=30,
    parent="0000:00:03.1",
)
# GT 710, the host's boot GPU, group 31 (behind 00:03.2: assumed).
GT710 = FunctionSpec(
    "0000:0c:00.0",
    "10de",
    "128b",
    "030000",
    revision="a1",
    driver="nouveau",
    iommu_group=31,
    parent="0000:00:03.2",
    boot_vga=True,
    reset_methods=["bus"],
)
GT710_AUDIO = FunctionSpec(
    "0000:0c:00.1",
    "10de",
    "0e0f",
    "040300",
    revision="a1",
    driver="snd_hda_intel",
    iommu_group=31,
    parent="0000:00:03.2",
)


def x570(**overrides: object) -> HostSpec:
    """The X570 host: root on the NVMe, default route on the I211, boot GPU the GT 710."""
    settings: dict[str, object] = {
        "functions": [*X570_BRIDGES, *X570_CHIPSET, NVME, I211, GTX1080TI, GTX1080TI_AUDIO, GT710, GT710_AUDIO],
        "cpu_vendor": "AuthenticAMD",
        "cpu_flags": ("fpu", "svm", "x2apic"),
        "iommu": "amd",
        "modules": ("kvm_amd", "kvm"),
        "block_devices": {"nvme0n1": NVME.address},
        "root_source": "/dev/nvme0n1p2",
        "net_devices": {"enp6s0": I211.address},
        "net_bridges": {"vmbr0": ["enp6s0"]},
        "default_route": "vmbr0",
    }
    settings.update(overrides)
    return HostSpec(**settings)  # type: ignore[arg-type]


# sirspudd-threadripper-1950x: X399; RX 580 (Polaris 10) with its audio in group 42 (behind 40:03.1: assumed),
# Radeon VII (Vega 20) at 0d:00.0 in group 20 with its audio alone in group 21.
THREADRIPPER = [
    FunctionSpec("0000:40:03.1", "1022", "1453", "060400", driver="pcieport", iommu_group=34),
    FunctionSpec(
        "0000:43:00.0",
        "1002",
        "67df",
        "030000",
        revision="ef",
        driver="amdgpu",
        iommu_group=42,
        parent="0000:40:03.1",
        boot_vga=False,
        reset_methods=["bus"],
    ),
    FunctionSpec(
        "0000:43:00.1", "1002", "aaf0", "040300", driver="snd_hda_intel", iommu_group=42, parent="0000:40:03.1"
    ),
    FunctionSpec("0000:00:03.1", "1022", "1453", "060400", driver="pcieport", iommu_group=6),
    FunctionSpec(
        "0000:0d:00.0",
        "1002",
        "66af",
        "030000",
        revision="c1",
        driver="amdgpu",
        iommu_group=20,
        parent="0000:00:03.1",
        boot_vga=False,
        reset_methods=["bus"],
    ),
    FunctionSpec(
        "0000:0d:00.1", "1002", "ab20", "040300", driver="snd_hda_intel", iommu_group=21, parent="0000:00:03.1"
    ),
]


def threadripper(**overrides: object) -> HostSpec:
    settings: dict[str, object] = {"functions": list(THREADRIPPER), "cpu_vendor": "AuthenticAMD", "iommu": "amd"}
    settings.update(overrides)
    return HostSpec(**settings)  # type: ignore[arg-type]


# wangyinfeng-sriov-handbook: two 82576 ports (8086:10c9) at 82:00.0/.1 behind root port 80:01.0,
# "Total VFs: 8"; VFs are 8086:10ca driven by igbvf, and 82:10.1 is VF 0 of 82:00.1, which makes
# the routing-id offset 128 and the stride 2.
SRIOV_PORTS = [
    FunctionSpec("0000:80:01.0", "8086", "3c02", "060400", driver="pcieport", iommu_group=40),
    *(
        FunctionSpec(
            f"0000:82:00.{port}",
            "8086",
            "10c9",
            "020000",
            revision="01",
            driver="igb",
            iommu_group=41 + port,
            parent="0000:80:01.0",
            sriov_totalvfs=8,
            reset_methods=["flr", "bus"],
            extra={"sriov_vf_device": "10ca", "sriov_stride": "2"},
        )
        for port in (0, 1)
    ),
]


def sriov_host(**overrides: object) -> HostSpec:
    settings: dict[str, object] = {"functions": list(SRIOV_PORTS), "modules": ("kvm_intel", "kvm", "igb")}
    settings.update(overrides)
    return HostSpec(**settings)  # type: ignore[arg-type]


# Linux 6.1 under QEMU (tests/realkernel, scenario intel): edu and an e1000 on one bus behind
# a PCIe-to-PCI bridge. edu listed `bus` (it was alone on its bus when the kernel added it),
# yet the kernel answered ENOTTY to `echo 1 > reset`.
EDU_BRIDGE, EDU, EDU_NEIGHBOUR = "0000:00:06.0", "0000:01:01.0", "0000:01:02.0"


def edu_and_e1000(edu_methods: list[str]) -> HostSpec:
    return HostSpec(
        functions=[
            FunctionSpec(EDU_BRIDGE, "1b36", "000e", "060400", driver="pcieport", iommu_group=3),
            FunctionSpec(EDU, "1234", "11e8", "00ff00", iommu_group=3, parent=EDU_BRIDGE, reset_methods=edu_methods),
            FunctionSpec(
                EDU_NEIGHBOUR, "8086", "100e", "020000", iommu_group=3, parent=EDU_BRIDGE, reset_methods=["bus"]
            ),
        ]
    )


def tree_digest(root: str | os.PathLike[str]) -> dict[str, str]:
    """Every file's content hash and every link's target under ``root`` (the double's own state aside)."""
    digest = {}
    base = os.fspath(root)
    for directory, subdirectories, files in os.walk(base):
        subdirectories[:] = [name for name in subdirectories if name != ".kerneldouble"]
        relative = os.path.relpath(directory, base)
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            key = os.path.normpath(os.path.join(relative, name))
            if os.path.islink(path):
                digest[key] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                digest[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                digest[key] = "dir"
    return digest
