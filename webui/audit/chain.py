"""The keyed hash chain behind the audit log, free of Django so it can be checked by anyone with the key.

Each event's hash is HMAC-SHA-256, under the audit key, over the previous event's hash and
the event's own fields in canonical JSON (sorted keys, no spaces, UTF-8). Editing a field
breaks that row's hash; inserting or deleting a row breaks the next row's link to its
predecessor; deleting the newest rows is caught by the head (count and last hash, with a
MAC of its own) kept beside the chain. The key lives in a file of its own, not in the
database: whoever can write the database but not read that file cannot recompute a hash.
"""

from __future__ import annotations

import hashlib
import hmac
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


def event_hash(key: bytes, prev_hash: str, event: Mapping[str, Any]) -> str:
    return hmac.new(key, prev_hash.encode() + b"\n" + canonical(event), hashlib.sha256).hexdigest()


def unkeyed_event_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    """The plain SHA-256 of logs written before the chain was keyed (only the migration that keys them reads it)."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(event)).hexdigest()


def seal(key: bytes, *parts: object) -> str:
    """A MAC over a few values (the head's count and hash, a checkpoint), so they cannot be rewritten without the key."""
    return hmac.new(key, "\x1f".join(str(part) for part in parts).encode(), hashlib.sha256).hexdigest()


def sealed(key: bytes, mac: str, *parts: object) -> bool:
    return hmac.compare_digest(seal(key, *parts), mac or "")


@dataclass
class Verification:
    ok: bool
    checked: int
    problems: list[str] = field(default_factory=list)
    head: str = GENESIS
    verified_before: int = 0  # events a checkpoint vouched for, not walked this time

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "verified_before": self.verified_before,
            "problems": self.problems,
            "head": self.head,
        }


def verify(
    key: bytes,
    events: Iterable[Mapping[str, Any]],
    head_count: int | None = None,
    head_hash: str | None = None,
    *,
    start_hash: str = GENESIS,
    start_count: int = 0,
) -> Verification:
    """Walk the events in id order. Each is a mapping with HASHED_FIELDS plus prev_hash and hash.

    ``start_hash`` and ``start_count`` resume from a checkpoint: the hash of the last event
    already verified and how many events it closed.
    """
    problems: list[str] = []
    previous = start_hash
    checked = 0
    for event in events:
        checked += 1
        if event["prev_hash"] != previous:
            problems.append(
                f"Event {event['id']} does not follow the event before it: a row was inserted or deleted just before it."
            )
        if not hmac.compare_digest(event_hash(key, event["prev_hash"], event), event["hash"]):
            problems.append(
                f"Event {event['id']} was changed after it was written: its hash no longer matches its fields."
            )
        previous = event["hash"]
    total = start_count + checked
    if head_count is not None and head_count != total:
        problems.append(
            f"The log should hold {head_count} events but holds {total}: "
            + ("the newest events were deleted." if total < head_count else "events were added outside the log.")
        )
    if head_hash is not None and total and head_hash != previous:
        problems.append("The newest event is not the one the log last recorded: the end of the log was rewritten.")
    return Verification(ok=not problems, checked=checked, problems=problems, head=previous, verified_before=start_count)
