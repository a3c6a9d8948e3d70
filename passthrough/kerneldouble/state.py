"""The double's memory, kept in the tree itself so every process sees the same kernel.

A Celery worker builds ``KernelDouble(root)`` from a setting while the test that started
it holds its own; both read and write ``<root>/.kerneldouble/state.json`` under an
exclusive ``flock``, one write at a time, as the kernel serialises device_lock holders.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from passthrough.kerneldouble.faults import Fault

STATE_DIR = ".kerneldouble"
STATE_FILE = f"{STATE_DIR}/state.json"
LOCK_FILE = f"{STATE_DIR}/lock"
STASH_DIR = f"{STATE_DIR}/stash"


@dataclass
class DoubleState:
    # The driver each function had when the double was created: probing a function with
    # no driver_override returns it there, as the kernel's id tables would.
    native: dict[str, str | None] = field(default_factory=dict)
    # The reset methods each function supports (the kernel's probed, "default" list).
    reset_methods: dict[str, list[str]] = field(default_factory=dict)
    dynamic_ids: dict[str, list[str]] = field(default_factory=dict)  # driver -> ["10de:1c82"] from new_id
    vf_drivers: dict[str, str | None] = field(default_factory=dict)  # PF address -> VF driver
    faults: list[Fault] = field(default_factory=list)
    write_count: int = 0
    commands: list[list[str]] = field(default_factory=list)
    resets: list[dict[str, str]] = field(default_factory=list)  # {"address", "method"} of each reset done
    # Class devices (fb0, card0, enp5s0) a driver took with it when it let go of its device.
    stash: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "native": self.native,
            "reset_methods": self.reset_methods,
            "dynamic_ids": self.dynamic_ids,
            "vf_drivers": self.vf_drivers,
            "faults": [fault.to_json() for fault in self.faults],
            "write_count": self.write_count,
            "commands": self.commands,
            "resets": self.resets,
            "stash": self.stash,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DoubleState:
        state = cls(**{key: value for key, value in data.items() if key != "faults"})
        state.faults = [Fault.from_json(item) for item in data.get("faults", [])]
        return state


def state_path(root: str) -> str:
    return os.path.join(root, STATE_FILE)


def exists(root: str) -> bool:
    return os.path.exists(state_path(root))


def load(root: str) -> DoubleState:
    with open(state_path(root)) as handle:
        return DoubleState.from_json(json.load(handle))


def save(root: str, state: DoubleState) -> None:
    path = state_path(root)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        json.dump(state.to_json(), handle, indent=1, sort_keys=True)
    os.replace(temporary, path)


@contextmanager
def locked(root: str) -> Iterator[None]:
    os.makedirs(os.path.join(root, STATE_DIR), exist_ok=True)
    with open(os.path.join(root, LOCK_FILE), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
