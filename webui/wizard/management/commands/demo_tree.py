"""`manage.py demo_tree MACHINE DEST`: lay out a real-world machine as a host tree for the demo.

scripts/run --demo uses it: the worker then reads DEST with the kernel double in front
(PASSTHROUGH_KERNEL=double), so every page and every job works without passthrough
hardware. An existing tree is kept, so what a demo user did (a bound GPU) survives a
restart the way it would on a host until its next reboot; --fresh starts over.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from passthrough import realworld
from passthrough.treebuilder import write_tree

DEFAULT_MACHINE = "asokolsky-duo"


class Command(BaseCommand):
    help = "Write a real-world machine from passthrough.realworld as a host tree (for scripts/run --demo)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("machine", help=f"a name from passthrough.realworld.MACHINES, e.g. {DEFAULT_MACHINE}")
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
