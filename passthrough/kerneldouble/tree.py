"""What every part of the double writes with: the refusal it answers a write with, links and files.

The bottom of the double: imports only passthrough.host.
"""

from __future__ import annotations

import os

from passthrough.host import HostTree


class KernelRefused(Exception):
    """A write the kernel answers with an errno; the double turns it into SysfsWriteError."""

    def __init__(self, errno: int, why: str, *, surfaces: bool = True) -> None:
        super().__init__(why)
        self.errno = errno
        self.why = why
        # False: a failed probe that drivers_probe swallows (the function just stays unbound).
        self.surfaces = surfaces


def link(tree: HostTree, at: str, target: str) -> None:
    """A relative symlink at ``at`` to ``target`` (both relative to the root)."""
    path = tree.path(at)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(os.path.relpath(tree.path(target), os.path.dirname(path)), path)


def unlink(tree: HostTree, at: str) -> None:
    if os.path.lexists(tree.path(at)):
        os.unlink(tree.path(at))


def write_file(tree: HostTree, at: str, text: str) -> None:
    path = tree.path(at)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
