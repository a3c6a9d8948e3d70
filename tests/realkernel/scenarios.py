"""The guests the suite boots: one per scenario, each running one module of tests/realkernel_guest/.

Addresses are fixed by the ``addr=`` of each device (QEMU's q35 puts the root complex's
devices on bus 0 at the slot given; a root port's secondary bus is numbered by the
kernel in the order it enumerates: 01, 02, …), so the guest tests can name them.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.realkernel import nested
from tests.realkernel.guest import Machine

NESTED_PORTS = 3  # the vm scenario's nested VM: its empty root ports (rp1, rp2, rp3)

GUEST_TESTS = Path(__file__).resolve().parents[1] / "realkernel_guest"


@dataclass(frozen=True)
class Scenario:
    name: str
    machine: Machine
    modules: tuple[str, ...]  # files in tests/realkernel_guest/, run by one pytest in one boot
    timeout: float = 600
    # About how long its guest takes alone on this two-core machine (bench/realkernel.py). The
    # guests start longest first, so the longest two do not end up one after the other on
    # one core while the other core has finished: the wall time is then about half the sum.
    seconds: float = 60
    # What the host prepares before the guest boots, as environment variables for its tests.
    prepare: Callable[[], dict[str, str]] | None = None

    @property
    def paths(self) -> list[Path]:
        return [GUEST_TESTS / module for module in self.modules]

    def test_names(self) -> list[str]:
        """The modules' test functions, read from their source (collection needs them before any boot)."""
        names = []
        for path in self.paths:
            tree = ast.parse(path.read_text())
            names += [
                node.name
                for node in tree.body
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
            ]
        return names


# Scenario 1: Intel VT-d, every operation.
INTEL = Scenario(
    name="intel",
    seconds=240,
    modules=("test_intel.py", "test_intel_worker.py"),
    machine=Machine(
        iommu="intel",
        devices=[
            "e1000e,addr=03.0",
            "nvme,serial=pwnvme0,addr=04.0",
            "ich9-intel-hda,id=hda0,addr=05.0,multifunction=on",
            "hda-duplex,bus=hda0.0,audiodev=snd0",  # a codec, so snd_hda_intel makes a sound card
            "qemu-xhci,addr=05.1",
            "pcie-pci-bridge,id=pcibridge,addr=06.0",
            "edu,bus=pcibridge,addr=01.0",
            "e1000,bus=pcibridge,addr=02.0",
            "pcie-root-port,id=rp1,chassis=1,slot=1,x-speed=5,addr=07.0",
            "nvme-subsys,id=nvmesubsys,nqn=pw-sriov",
            "nvme,serial=pwsriov,subsys=nvmesubsys,bus=rp1,sriov_max_vfs=2,sriov_vq_flexible=4,"
            "sriov_vi_flexible=2,max_ioqpairs=6",
        ],
        extra=["-audiodev", "none,id=snd0"],
    ),
)

# Scenario 2: AMD-Vi: scan, readiness, one bind and its restore. The amd-iommu is itself a
# PCI function and takes the first free slot (00:01.0), pushing the two 9p shares to 02 and
# 03, so the e1000e sits at 04.
AMD = Scenario(
    name="amd",
    seconds=37,
    modules=("test_amd.py",),
    # amd_iommu=on is what many guides tell AMD users to add; the kernel rejects it ("Unknown
    # option") and the readiness check must say so.
    machine=Machine(iommu="amd", devices=["e1000e,addr=04.0"], append="amd_iommu=on"),
)

# Scenario 3: no vIOMMU at all: the kernel still prints "DMAR: IOMMU enabled", with no groups.
NO_IOMMU = Scenario(
    name="no-iommu",
    seconds=46,
    modules=("test_no_iommu.py",),
    machine=Machine(iommu="none", devices=["e1000e,addr=03.0"], append="intel_iommu=on"),
)

# Scenario 4: two root ports as functions of one slot, ACS off: their groups merge.
NO_ACS = Scenario(
    name="no-acs",
    seconds=46,
    modules=("test_no_acs.py",),
    machine=Machine(
        iommu="intel",
        devices=[
            "pcie-root-port,id=rpa,chassis=1,slot=1,x-speed=5,addr=08.0,multifunction=on,disable-acs=on",
            "pcie-root-port,id=rpb,chassis=2,slot=2,x-speed=5,addr=08.1,disable-acs=on",
            "e1000e,bus=rpa",
            "nvme,serial=pwacs,bus=rpb",
        ],
    ),
)

# Scenario 5: GPUs: the boot VGA that carries the console, and a second GPU with its audio.
GPUS = Scenario(
    name="gpus",
    seconds=55,
    modules=("test_gpus.py",),
    machine=Machine(
        iommu="intel",
        devices=[
            "VGA,addr=02.0",  # where a PC's integrated GPU sits
            "pcie-root-port,id=rpg,chassis=3,slot=3,x-speed=5,addr=09.0",
            "secondary-vga,bus=rpg,addr=00.0,multifunction=on",
            "ich9-intel-hda,id=hdag,bus=rpg,addr=00.1",
            "hda-duplex,bus=hdag.0,audiodev=snd0",  # a codec, so snd_hda_intel makes a whole sound card
        ],
        extra=["-audiodev", "none,id=snd0"],
    ),
)

# Scenario 6: a running VM takes functions on vfio-pci and gives them back: a nested QEMU
# booting the same kernel (tests/realkernel/nested.py) gets the e1000e alone and the HDA+xHCI
# slot as one two-function card hot-plugged through QMP, and its Linux releases them.
VM = Scenario(
    name="vm",
    seconds=118,
    modules=("test_vm_hotplug.py",),
    machine=Machine(
        iommu="intel",
        devices=["e1000e,addr=03.0", "ich9-intel-hda,id=hda0,addr=05.0,multifunction=on", "qemu-xhci,addr=05.1"],
    ),
    timeout=1800,  # room for the fallback: booting the nested Linux inside, minutes under nested TCG
    prepare=lambda: {"GUEST_NESTED_STATE": str(nested.save_state(ports=NESTED_PORTS))},
)

SCENARIOS = {scenario.name: scenario for scenario in (INTEL, AMD, NO_IOMMU, NO_ACS, GPUS, VM)}
