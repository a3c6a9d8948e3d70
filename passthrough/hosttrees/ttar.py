"""ttar, the plain-text tar of prometheus/procfs' sysfs fixtures: read it and lay it out.

The packaged fixture (:func:`ttar_bytes`) holds an E810 with SR-IOV under
``sys/devices``; :func:`passthrough.hosttrees.realworld.prometheus_e810` builds a host from its
attributes, and the tests unpack it whole as a real sysfs tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

FIXTURE = os.path.join(
    os.path.dirname(os.path.dirname(__file__)),
    "data",
    "realworld",
    "prometheus-procfs-fixtures",
    "fixtures.pci-subset.ttar",
)


@dataclass(frozen=True)
class TtarRecord:
    path: str
    kind: str  # "file", "directory" or "symlink"
    content: bytes = b""
    target: str = ""


def read_ttar(data: bytes) -> Iterator[TtarRecord]:
    """Records of a ttar (plain-text tar): ``Path:`` + ``Lines: N`` + N lines + ``Mode:``,
    ``Path:`` + ``SymlinkTo:``, or ``Directory:``. A last line ending in ``EOF`` had no
    newline; ``NULLBYTE`` stands for a zero byte."""
    lines = data.split(b"\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.startswith(b"Directory: "):
            yield TtarRecord(line[11:].decode(), "directory")
        elif line.startswith(b"Path: ") and index < len(lines):
            path, following = line[6:].decode(), lines[index]
            if following.startswith(b"SymlinkTo: "):
                yield TtarRecord(path, "symlink", target=following[11:].decode())
            elif following.startswith(b"Lines: "):
                count = int(following[7:])
                content = b"".join(part + b"\n" for part in lines[index + 1 : index + 1 + count])
                content = content[:-4] if content.endswith(b"EOF\n") else content
                yield TtarRecord(path, "file", content.replace(b"NULLBYTE", b"\0"))
                index += 1 + count


def unpack_ttar(data: bytes, destination: str, strip: str = "fixtures/") -> None:
    """Lay a ttar out under ``destination``, dropping the ``strip`` prefix of its paths."""
    for record in read_ttar(data):
        relative = record.path.removeprefix(strip)
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"ttar path {record.path!r} leaves the destination")
        path = os.path.join(destination, relative)
        if record.kind == "directory":
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if record.kind == "symlink":
            os.symlink(record.target, path)
        else:
            with open(path, "wb") as handle:
                handle.write(record.content)


def ttar_bytes() -> bytes:
    """The packaged fixture: prometheus/procfs' PCI subset (see its PROVENANCE.txt)."""
    with open(FIXTURE, "rb") as handle:
        return handle.read()
