"""The hash chain behind the audit log, free of Django so it can be checked by anyone.

Each event's hash is SHA-256 over the previous event's hash and the event's own fields in
canonical JSON (sorted keys, no spaces, UTF-8). Editing a field breaks that row's hash;
inserting or deleting a row breaks the next row's link to its predecessor; deleting the
newest rows is caught by the head (count and last hash) kept beside the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64

# The fields a hash covers, in the order an auditor reads them. Never rename or drop one:
# old rows would stop verifying.
HASHED_FIELDS = (
    "id",
    "created",
    "actor",
    "source",
    "host",
    "action",
    "targets",
    "parameters",
    "state_before",
    "state_after",
    "result",
    "error",
    "job_id",
)


def canonical(event: Mapping[str, Any]) -> bytes:
    payload = {name: event.get(name) for name in HASHED_FIELDS}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def event_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(event)).hexdigest()


@dataclass
class Verification:
    ok: bool
    checked: int
    problems: list[str] = field(default_factory=list)
    head: str = GENESIS

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "problems": self.problems, "head": self.head}


def verify(
    events: Iterable[Mapping[str, Any]], head_count: int | None = None, head_hash: str | None = None
) -> Verification:
    """Walk the events in id order. Each is a mapping with HASHED_FIELDS plus prev_hash and hash."""
    problems: list[str] = []
    previous = GENESIS
    checked = 0
    for event in events:
        checked += 1
        if event["prev_hash"] != previous:
            problems.append(
                f"Event {event['id']} does not follow the event before it: a row was inserted or deleted just before it."
            )
        if event_hash(event["prev_hash"], event) != event["hash"]:
            problems.append(
                f"Event {event['id']} was changed after it was written: its hash no longer matches its fields."
            )
        previous = event["hash"]
    if head_count is not None and head_count != checked:
        problems.append(
            f"The log should hold {head_count} events but holds {checked}: "
            + ("the newest events were deleted." if checked < head_count else "events were added outside the log.")
        )
    if head_hash is not None and checked and head_hash != previous:
        problems.append("The newest event is not the one the log last recorded: the end of the log was rewritten.")
    return Verification(ok=not problems, checked=checked, problems=problems, head=previous)
