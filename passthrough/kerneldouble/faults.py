"""Faults the kernel double can inject, so tests reach the paths real hardware takes rarely.

A fault is plain data (it is stored in the tree's state file, so a Celery worker in
another process sees the faults a test injected). Kinds:

* ``probe_fails``: a driver's probe of ``address`` fails (only ``driver``, if given).
  ``drivers_probe`` then leaves the function without a driver, as the kernel does; with
  ``errno`` set the write itself fails with it. An explicit ``bind`` always fails
  (``errno``, default ENODEV).
* ``write_fails``: a write to a path matching ``path`` (a glob, relative to the root,
  matched against the path as written and as resolved) fails with ``errno``;
  ``value`` narrows it to one value.
* ``hang``: a write to ``path`` sleeps ``seconds`` before it takes effect.
* ``nth_write_fails``: the ``nth`` write after the fault is injected fails with ``errno``.
* ``reset_fails``: reset ``method`` of ``address`` answers ``errno`` (ENOTTY: the kernel
  tries the next method; anything else stops the reset).
* ``sriov_enables_fewer``: the PF driver of ``address`` enables only ``count`` VFs.
* ``command_fails``: a command matching ``command`` (a glob over the joined argv)
  exits with ``returncode``.

``times`` limits how often a fault fires (None: every time).
"""

from __future__ import annotations

import errno as errnos
import fnmatch
from dataclasses import asdict, dataclass, fields
from typing import Any

KINDS = (
    "probe_fails",
    "write_fails",
    "hang",
    "nth_write_fails",
    "reset_fails",
    "sriov_enables_fewer",
    "command_fails",
)


@dataclass
class Fault:
    kind: str
    path: str | None = None
    address: str | None = None
    driver: str | None = None
    method: str | None = None
    value: str | None = None
    command: str | None = None
    errno: int | None = None
    seconds: float = 0.0
    nth: int | None = None
    count: int | None = None
    returncode: int = 1
    times: int | None = None
    fired: int = 0
    armed_at: int = 0  # the write counter when the fault was injected (nth_write_fails)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def matches_path(self, *paths: str) -> bool:
        return self.path is not None and any(fnmatch.fnmatchcase(path, self.path) for path in paths)

    def matches_value(self, value: str) -> bool:
        return self.value is None or self.value == value.strip()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def probe_fails(
    address: str, *, driver: str | None = None, errno: int | None = None, times: int | None = None
) -> Fault:
    return Fault("probe_fails", address=address, driver=driver, errno=errno, times=times)


def write_fails(path: str, errno: int = errnos.EBUSY, *, value: str | None = None, times: int | None = None) -> Fault:
    return Fault("write_fails", path=path, errno=errno, value=value, times=times)


def hang(path: str, seconds: float, *, times: int | None = None) -> Fault:
    return Fault("hang", path=path, seconds=seconds, times=times)


def nth_write_fails(nth: int, errno: int = errnos.EIO) -> Fault:
    return Fault("nth_write_fails", nth=nth, errno=errno, times=1)


def reset_fails(address: str, method: str, errno: int = errnos.ENOTTY) -> Fault:
    return Fault("reset_fails", address=address, method=method, errno=errno)


def sriov_enables_fewer(address: str, count: int, *, times: int | None = None) -> Fault:
    return Fault("sriov_enables_fewer", address=address, count=count, times=times)


def command_fails(command: str, returncode: int = 1) -> Fault:
    return Fault("command_fails", command=command, returncode=returncode)
