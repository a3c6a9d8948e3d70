"""The plain data of a diagnosis: log lines in, findings out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")
EVIDENCE_SHOWN = 8  # lines kept per finding; ``occurrences`` counts them all


@dataclass(frozen=True)
class LogLine:
    source: str  # "dmesg", or the path of the log file on the host
    text: str  # verbatim, without its line ending


@dataclass
class Finding:
    id: str  # stable: "group_not_viable"
    severity: str  # one of SEVERITIES
    device: str | None  # the full address (0000:01:00.0) when a line names one
    summary: str
    evidence: list[str] = field(default_factory=list)  # verbatim lines, at most EVIDENCE_SHOWN
    sources: list[str] = field(default_factory=list)  # the logs the lines came from
    occurrences: int = 0  # matching lines in all, shown or not
    cause: str = ""
    fix: str = ""
    details: dict[str, str] = field(default_factory=dict)  # what the lines said (group, errno, BAR)

    def add(self, line: LogLine) -> None:
        self.occurrences += 1
        if len(self.evidence) < EVIDENCE_SHOWN and line.text not in self.evidence:
            self.evidence.append(line.text)
        if line.source not in self.sources:
            self.sources.append(line.source)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "device": self.device,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "sources": list(self.sources),
            "occurrences": self.occurrences,
            "cause": self.cause,
            "fix": self.fix,
        }


@dataclass
class Diagnosis:
    findings: list[Finding]
    sources: list[str]  # every log that was read, with or without findings
    unreadable: list[str] = field(default_factory=list)  # logs that could not be read, and why

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [finding.to_json() for finding in self.findings],
            "sources": list(self.sources),
            "unreadable": list(self.unreadable),
        }
