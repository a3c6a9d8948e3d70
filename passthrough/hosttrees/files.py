"""The two file primitives every host-tree writer uses: a file with its parents, a relative link."""

from __future__ import annotations

import os


def write_file(path: str, text: str | bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode) as handle:
        handle.write(text)


def relative_link(path: str, target_abs: str) -> None:
    """A relative symlink at ``path`` to ``target_abs``, so the tree can be moved."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    os.symlink(os.path.relpath(target_abs, os.path.dirname(path)), path)
