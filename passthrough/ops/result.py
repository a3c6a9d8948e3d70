"""What an operation did: its steps with their times, the state before and after, the outcome.

The Celery task stores :meth:`OperationResult.to_json` in the Job row and pushes each
:class:`Step` to the live page through ``progress``, called when a step starts and again
when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from passthrough.errors import PassthroughError

SUCCEEDED = "succeeded"
UNCHANGED = "unchanged"  # already as asked: nothing was written
FAILED = "failed"  # could not be done, or the rollback itself failed (state_after says where things are)
ROLLED_BACK = "rolled_back"  # failed part way and every change was undone
OUTCOMES = (SUCCEEDED, UNCHANGED, FAILED, ROLLED_BACK)


@dataclass
class Step:
    name: str  # validate, snapshot, load_module, release_console, override, unbind, bind, verify, rollback...
    target: str | None = None
    started: float = 0.0
    finished: float | None = None
    ok: bool | None = None  # None while running
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[Step], None]


@dataclass
class OperationResult:
    action: str
    targets: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None
    steps: list[Step] = field(default_factory=list)
    state_before: dict[str, Any] = field(default_factory=dict)
    state_after: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    undo: dict[str, Any] | None = None  # how to undo an applied file change (persistence)
    plan: dict[str, Any] | None = None  # a persistence plan (diff, fingerprint) shown before applying

    @property
    def ok(self) -> bool:
        return self.outcome in (SUCCEEDED, UNCHANGED)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = [step.to_json() for step in self.steps]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperationResult:
        result = cls(**{key: value for key, value in data.items() if key != "steps"})
        result.steps = [Step(**step) for step in data.get("steps", [])]
        return result


class Recorder:
    """Records steps into a result and reports each one as it starts and ends."""

    def __init__(self, result: OperationResult, progress: Progress | None) -> None:
        self.result = result
        self.progress = progress

    def _report(self, step: Step) -> None:
        if self.progress is not None:
            self.progress(step)

    @contextmanager
    def step(self, name: str, target: str | None = None, detail: str = "") -> Iterator[Step]:
        """A step that fails when its body raises; the exception goes on to the caller."""
        step = Step(name=name, target=target, started=time.time(), detail=detail)
        self.result.steps.append(step)
        self._report(step)
        try:
            yield step
        except BaseException as error:
            step.ok = False
            step.detail = _join(step.detail, _describe(error))
            raise
        else:
            step.ok = True
        finally:
            step.finished = time.time()
            self._report(step)

    def note(self, name: str, target: str | None, detail: str, *, ok: bool = True) -> Step:
        """A step that is only a finding (nothing to wait for)."""
        now = time.time()
        step = Step(name=name, target=target, started=now, finished=now, ok=ok, detail=detail)
        self.result.steps.append(step)
        self._report(step)
        self._report(step)
        return step


def _describe(error: BaseException) -> str:
    if isinstance(error, PassthroughError):
        return error.message
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _join(first: str, second: str) -> str:
    return f"{first} {second}".strip() if first else second
