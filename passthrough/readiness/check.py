"""A readiness check's result: what was looked at, what it means, and the fix for this host."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from passthrough.evidence import Evidence

STATUSES = ("pass", "warn", "fail", "skip")


@dataclass
class Check:
    id: str  # stable: scripts and the UI key on it
    title: str
    status: str  # one of STATUSES
    summary: str  # one sentence
    evidence: list[Evidence] = field(default_factory=list)  # what the check actually read
    fix: str | None = None  # the exact fix for this host, in words a user can follow
    plan: dict[str, Any] | None = None  # the same fix as data (file edits, commands) for a job to apply
    notes: list[str] = field(default_factory=list)  # further facts worth knowing, not problems

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "evidence": [item.to_json() for item in self.evidence],
            "fix": self.fix,
            "plan": self.plan,
            "notes": self.notes,
        }
