"""`manage.py demo_tree MACHINE DEST`: lay out a real-world machine as a host tree for the demo.

scripts/run --demo uses it: the worker then reads DEST with the kernel double in front
(PASSTHROUGH_KERNEL=double), so every page and every job works without passthrough
hardware. An existing tree is kept, so what a demo user did (a bound GPU) survives a
restart the way it would on a host until its next reboot; --fresh starts over.
`--help` lists every machine of passthrough.hosttrees.realworld with a line about each.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, DjangoHelpFormatter

from passthrough.hosttrees import realworld
from passthrough.hosttrees.tree import write_tree

DEFAULT_MACHINE = "asokolsky-duo"

# What each machine shows, in a line; a machine added to realworld.MACHINES without one
# is described by the first line of its function's docstring.
DESCRIPTIONS = {
    "asokolsky-duo": "ASRock Z370 desktop: GT 1030 and its HDMI audio alone in group 2, the root NVMe host-critical",
    "asokolsky-fuji": "Fujitsu C236 server on Proxmox: SATA, an I210 and an I350 already on vfio-pci",
    "asokolsky-nas": "Supermicro Atom C3000 NAS on TrueNAS: QAT, four X553 ports, the AST1150 bridge and VGA in one group",
    "asokolsky-suprox": "Supermicro C246 server on Proxmox: the I350's two ports in group 1 with root port 00:01.0",
    "ashtonian-city17": "Alder Lake desktop: RX 6700 XT and its audio split over two groups, an RX 560 on vfio-pci",
    "mapmanagement-b550": "Gigabyte B550 + Ryzen 3900X: a Vega on the CPU; the host's RX 550 in the chipset's big group",
    "mapmanagement-b550-before-acs": "the same B550 before ACS was enabled: all behind the CPU's first GPP bridges in group 0",
    "mapmanagement-b550-rx6950xt": "the same B550 later, with an RX 6950 XT behind its Navi switch as the guest GPU",
    "schplorg-t480": "ThinkPad T480 with a Thunderbolt 3 eGPU: the GTX 1060 shares group 14 with the enclosure",
    "ethanzhf-server": "multi-socket Sapphire Rapids-class server: 483 functions, each accelerator alone in a group",
    "naunter-b550": "ASRock B550 ITX + Ryzen 5700G with the ACS override patch: the APU's iGPU and audio apart",
    "joe-p-x570": "Gigabyte X570 + Ryzen 3900X: GTX 1080 Ti in group 30, GT 710 in 31, chipset ports grouped",
    "sirspudd-threadripper": "Threadripper 1950X on X399, two root complexes: Radeon VII split over two groups, RX 580 in one",
    "mistikan-anaconda": "B560 + RX 7600 behind its Navi switch, the GPU and its audio in groups 12 and 13",
    "onizuka-arc310": "Intel Arc A310 on vfio-pci: GPU and audio on separate buses behind the card's switch (assumed)",
    "prometheus-e810": "Intel E810 NIC with SR-IOV, four virtual functions (a sysfs fixture of prometheus/procfs)",
}


def describe(machine: str) -> str:
    if machine in DESCRIPTIONS:
        return DESCRIPTIONS[machine]
    doc = (realworld.MACHINES[machine].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else "(no description)"


def machine_list(columns: int = 100) -> str:
    """Each machine on its line, its description wrapped under itself past ``columns``."""
    width = max(len(name) for name in realworld.MACHINES)
    lines = [
        textwrap.fill(
            f"{describe(name)}{' (the default)' if name == DEFAULT_MACHINE else ''}",
            columns,
            initial_indent=f"  {name:<{width}}  ",
            subsequent_indent=" " * (width + 4),
        )
        for name in realworld.MACHINES
    ]
    return "machines (published hardware, from passthrough/hosttrees/realworld.py):\n" + "\n".join(lines)


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's order of options, and the machine list kept one per line."""


class Command(BaseCommand):
    help = "Write a real-world machine from passthrough.hosttrees.realworld as a host tree (for scripts/run --demo)."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return super().create_parser(prog_name, subcommand, formatter_class=_HelpFormatter, epilog=machine_list())

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("machine", help=f"a machine listed below, e.g. {DEFAULT_MACHINE}")
        parser.add_argument("dest", help="the directory to write (kept when it holds a tree already)")
        parser.add_argument("--fresh", action="store_true", help="delete an existing tree at DEST first")

    def handle(self, *args: Any, machine: str, dest: str, fresh: bool, **options: Any) -> None:
        if machine not in realworld.MACHINES:
            raise CommandError(
                f"There is no demo machine {machine!r}. Choose one of: {', '.join(sorted(realworld.MACHINES))}."
            )
        root = Path(dest)
        if fresh and root.exists():
            shutil.rmtree(root)
        if (root / "sys" / "bus" / "pci" / "devices").is_dir():
            self.stdout.write(f"Reusing the demo tree of {machine} in {root} (--fresh starts over).")
            return
        if root.exists() and any(root.iterdir()):
            raise CommandError(f"{root} exists and is not a host tree; remove it or choose another directory.")
        write_tree(realworld.MACHINES[machine](), root)
        self.stdout.write(f"Wrote the demo tree of {machine} to {root}.")
