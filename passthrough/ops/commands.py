"""Commands the operations run (modprobe, update-grub, update-initramfs), behind one seam.

Every operation takes ``run_command``: a callable from argv to :class:`CommandResult`.
Left out, the runner follows the tree: the live host runs the command; a kernel double
answers it itself (``modprobe vfio-pci`` creates the driver directory); any other tree is
a capture or a test, where running the host's real ``update-grub`` would change the wrong
machine, so the command is recorded and reported as not run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from passthrough.host import HostTree

TIMEOUT_SECONDS = 600  # update-initramfs on a host with several kernels takes minutes


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    skipped: bool = False  # not run: the tree is not the live host

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.skipped

    @property
    def summary(self) -> str:
        shown = " ".join(self.argv)
        if self.skipped:
            return f"`{shown}` was not run: {self.stderr}"
        if self.returncode == 0:
            return f"`{shown}` succeeded."
        tail = (self.stderr or self.stdout).strip().splitlines()[-3:]
        return f"`{shown}` exited with {self.returncode}" + (f": {' / '.join(tail)}" if tail else ".")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


RunCommand = Callable[[list[str]], CommandResult]


def run_subprocess(argv: list[str]) -> CommandResult:
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    except FileNotFoundError:
        return CommandResult(argv, 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired as error:
        return CommandResult(argv, None, "", f"timed out after {error.timeout} seconds")
    return CommandResult(argv, completed.returncode, completed.stdout, completed.stderr)


def record_only(argv: list[str]) -> CommandResult:
    return CommandResult(argv, None, "", "this tree is not the live host, so nothing was run on it", skipped=True)


def runner_for(tree: HostTree, run_command: RunCommand | None = None) -> RunCommand:
    if run_command is not None:
        return run_command
    answering = getattr(tree, "run_command", None)
    if callable(answering):
        return answering  # type: ignore[no-any-return]
    return run_subprocess if tree.is_live else record_only
