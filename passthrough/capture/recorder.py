"""How a capture copies one path: the primitives under every area that capture records.

:class:`Recorder` copies chosen parts of a source tree into a staging directory at the
same relative paths. It decides nothing about *what* is recorded (that is the lists in
:mod:`passthrough.capture.sysfs` and :mod:`passthrough.capture.files`), only *how*:
reads are capped and never block on a FIFO, symlinks are recorded at their real place
with relative text, nothing leading outside the source root is followed, and every
path that could not be recorded is named in the summary with the reason.
"""

from __future__ import annotations

import os

from passthrough.capture.summary import CaptureSummary
from passthrough.host import HostTree

ATTRIBUTE_LIMIT = 64 * 1024


def read_capped(path: str, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes and whether there was more. O_NONBLOCK keeps a FIFO from hanging us."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(65536, limit - size))
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), bool(os.read(fd, 1))
    finally:
        os.close(fd)


class Recorder:
    """Copies the chosen parts of ``source`` into ``staging``, at the same relative paths."""

    def __init__(self, source: HostTree, staging: str, summary: CaptureSummary) -> None:
        self.source = source
        self.staging = staging
        self.summary = summary
        self.source_root = os.path.realpath(source.root)
        self.recorded: set[str] = set()  # real directories already recorded as nodes

    def _src(self, rel: str) -> str:
        return self.source.path(rel)

    def _dst(self, rel: str) -> str:
        return f"{self.staging}/{rel}"

    def resolve(self, rel: str) -> str | None:
        """Real path of ``rel`` relative to the source root; None when it leads outside."""
        real = os.path.realpath(self._src(rel))
        if self.source_root == "/":
            return real.lstrip("/")
        if real == self.source_root:
            return ""
        if real.startswith(self.source_root + "/"):
            return real[len(self.source_root) + 1 :]
        return None

    def ensure_dir(self, rel: str) -> None:
        if rel:
            os.makedirs(self._dst(rel), exist_ok=True)

    def write(self, rel: str, data: bytes) -> None:
        path = self._dst(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        self.summary.files += 1

    def placeholder(self, rel: str) -> None:
        if not os.path.lexists(self._dst(rel)):
            self.write(rel, b"")

    def copy_file(self, rel: str, limit: int, *, source_rel: str | None = None) -> bool:
        try:
            data, truncated = read_capped(self._src(source_rel or rel), limit)
        except OSError as error:
            self.summary.skip(rel, f"unreadable: {error.strerror or error}")
            return False
        if truncated:
            self.summary.skip(rel, f"truncated to its first {limit} bytes")
        self.write(rel, data)
        return True

    def copy_link(self, rel: str) -> str | None:
        """Record the symlink ``rel`` at its real place; return its real target (None: not recorded)."""
        parent = self.resolve(os.path.dirname(rel))
        if parent is None:
            self.summary.skip(rel, "its directory lies outside the captured host")
            return None
        real_rel = f"{parent}/{os.path.basename(rel)}" if parent else os.path.basename(rel)
        try:
            text = os.readlink(self._src(real_rel))
        except OSError as error:
            self.summary.skip(rel, f"unreadable link: {error.strerror or error}")
            return None
        target = self.resolve(real_rel)
        if target is None:
            self.summary.skip(rel, f"links outside the captured host ({text})")
            return None
        # Keep the kernel's own relative text when it names the real target; otherwise
        # (absolute links, links through other links) write the shortest relative path.
        literal = None if text.startswith("/") else os.path.normpath(os.path.join(parent, text))
        if literal != target:
            text = os.path.relpath(target or ".", parent or ".")
        path = self._dst(real_rel)
        if not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(text, path)
            self.summary.links += 1
        return target

    def ensure_target(self, rel: str | None) -> None:
        """Make a link's target directory exist (empty unless recorded), so the link resolves.

        Only directories: copying whatever file a link names would leak files outside the lists.
        """
        if rel is not None and os.path.isdir(self._src(rel)):
            self.ensure_dir(rel)

    def entry(self, rel: str) -> str | None:
        """Real directory of a class or bus entry: record the link and return its target."""
        return self.copy_link(rel) if os.path.islink(self._src(rel)) else self.resolve(rel)

    def node(self, real: str | None, files: tuple[str, ...] = (), links: tuple[str, ...] = ()) -> bool:
        """Record a directory's chosen files and links once; False when already done or absent."""
        if real is None or real in self.recorded or not os.path.isdir(self._src(real)):
            return False
        self.recorded.add(real)
        self.ensure_dir(real)
        for name in files:
            if os.path.isfile(self._src(f"{real}/{name}")):
                self.copy_file(f"{real}/{name}", ATTRIBUTE_LIMIT)
        for name in links:
            if os.path.islink(self._src(f"{real}/{name}")):
                self.ensure_target(self.copy_link(f"{real}/{name}"))
        return True

    def scandir(self, real: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self._src(real)) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            if os.path.lexists(self._src(real)):
                self.summary.skip(real, f"unlistable: {error.strerror or error}")
            return []

    def readable_files(self, real: str) -> None:
        """The readable regular files directly in ``real`` (a small, bounded sysfs directory)."""
        for item in self.scandir(real) if self.source.is_dir(real) else []:
            if item.is_file(follow_symlinks=False) and item.stat(follow_symlinks=False).st_mode & 0o444:
                self.copy_file(f"{real}/{item.name}", ATTRIBUTE_LIMIT)
