"""The audit log's hash chain: every edit, insertion or deletion shows."""

from __future__ import annotations

import json
import threading

import pytest
from django.core.management import call_command
from django.db import connection

from webui.audit import chain
from webui.audit.models import AuditEvent, AuditHead, record, verify_chain

pytestmark = pytest.mark.django_db(transaction=True)


def _events(count: int = 5) -> list[AuditEvent]:
    return [
        record(
            actor="alice",
            source="web",
            host="pve1",
            action="bind_vfio",
            targets=[f"0000:0{n}:00.0"],
            result="succeeded",
            job_id=n,
        )
        for n in range(1, count + 1)
    ]


def _sql(statement: str, *params: object) -> None:
    # Tampering goes around the model (it refuses updates and deletes), as someone with the database would.
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_an_untouched_chain_verifies():
    events = _events()
    result = verify_chain()
    assert result.ok and result.checked == 5 and result.head == events[-1].hash
    assert events[0].prev_hash == chain.GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(events, events[1:], strict=False))


def test_an_edited_field_is_detected():
    events = _events()
    _sql("UPDATE audit_auditevent SET result = 'failed' WHERE id = %s", events[2].pk)
    result = verify_chain()
    assert not result.ok
    assert result.problems == [
        f"Event {events[2].pk} was changed after it was written: its hash no longer matches its fields."
    ]


def test_an_edit_that_also_rewrites_the_hash_breaks_the_next_link():
    events = _events()
    tampered = AuditEvent.objects.get(pk=events[2].pk)
    tampered.actor = "mallory"
    new_hash = chain.event_hash(tampered.prev_hash, tampered.hashed_fields())
    _sql("UPDATE audit_auditevent SET actor = 'mallory', hash = %s WHERE id = %s", new_hash, events[2].pk)
    problems = verify_chain().problems
    assert any(f"Event {events[3].pk} does not follow" in problem for problem in problems)


def test_a_deleted_row_in_the_middle_is_detected():
    events = _events()
    _sql("DELETE FROM audit_auditevent WHERE id = %s", events[1].pk)
    problems = verify_chain().problems
    assert any(f"Event {events[2].pk} does not follow" in problem for problem in problems)
    assert any("should hold 5 events but holds 4" in problem for problem in problems)


def test_deleting_the_newest_rows_is_detected_by_the_head():
    events = _events()
    _sql("DELETE FROM audit_auditevent WHERE id >= %s", events[3].pk)
    problems = verify_chain().problems
    assert problems and "the newest events were deleted" in problems[0]


def test_an_inserted_row_is_detected():
    events = _events()
    fake_prev = events[1].hash
    _sql(
        "INSERT INTO audit_auditevent (created, actor, source, host, action, targets, parameters, result, error, prev_hash, hash) "
        "VALUES (%s, 'mallory', 'web', 'pve1', 'bind_vfio', '[]', '{}', 'succeeded', '', %s, %s)",
        events[1].created, "f" * 64, "e" * 64,
    )  # fmt: skip
    assert fake_prev != "f" * 64
    problems = verify_chain().problems
    assert any("does not follow" in problem for problem in problems)


def test_the_model_refuses_updates_and_deletes():
    event = _events(1)[0]
    event.result = "failed"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()


def test_writers_in_parallel_keep_one_chain():
    def writer(name: str) -> None:
        try:
            for n in range(10):
                record(actor=name, source="worker", host="pve1", action="scan", result="succeeded", job_id=n)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = verify_chain()
    assert result.ok, result.problems
    assert result.checked == 40 == AuditHead.objects.get().count


def test_audit_verify_command_exit_codes(capsys):
    events = _events(3)
    call_command("audit_verify")
    assert "Audit log intact: 3 events" in capsys.readouterr().out
    _sql("UPDATE audit_auditevent SET host = 'other' WHERE id = %s", events[0].pk)
    with pytest.raises(SystemExit) as exited:
        call_command("audit_verify", "--format", "json")
    assert exited.value.code == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["checked"] == 3
