"""The audit log's keyed hash chain: every edit, insertion or deletion shows, even to someone who can write the database."""

from __future__ import annotations

import json
import threading

import pytest
from django.core.management import call_command
from django.db import connection

from webui.audit import chain
from webui.audit.models import AuditCheckpoint, AuditEvent, AuditHead, audit_key, record, verify_chain, verify_recent

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
    new_hash = chain.event_hash(audit_key(), tampered.prev_hash, tampered.hashed_fields())
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


def _rewrite_whole_chain(hash_of) -> None:  # type: ignore[no-untyped-def]
    """What someone with the database but not the key does: edit a row, recompute every hash and the head."""
    previous = chain.GENESIS
    rows = list(AuditEvent.objects.order_by("id"))
    _sql("UPDATE audit_auditevent SET prev_hash = 'x' || id, hash = 'y' || id")
    for event in rows:
        fields = event.hashed_fields()
        if event.pk == rows[1].pk:
            fields["actor"] = "mallory"
        new_hash = hash_of(previous, fields)
        _sql(
            "UPDATE audit_auditevent SET actor = %s, prev_hash = %s, hash = %s WHERE id = %s",
            fields["actor"], previous, new_hash, event.pk,
        )  # fmt: skip
        previous = new_hash
    _sql("UPDATE audit_audithead SET last_hash = %s", previous)


@pytest.mark.parametrize(
    "hash_of",
    [chain.unkeyed_event_hash, lambda prev, fields: chain.event_hash(b"a guessed key", prev, fields)],
    ids=["plain-sha256", "wrong-key"],
)
def test_rewriting_every_hash_without_the_key_is_detected(hash_of):
    _events()
    _rewrite_whole_chain(hash_of)
    result = verify_chain()
    assert not result.ok
    assert sum("was changed after it was written" in problem for problem in result.problems) == 5
    assert any("head" in problem for problem in result.problems)


def test_truncating_the_log_and_rewriting_the_head_to_match_is_detected():
    events = _events()
    _sql("DELETE FROM audit_auditevent WHERE id >= %s", events[3].pk)
    _sql("UPDATE audit_audithead SET count = 3, last_hash = %s", events[2].hash)
    result = verify_chain()
    assert result.problems == [
        "The log's head (its count of events and newest hash) was rewritten without the audit key."
    ]


def test_the_page_verifies_from_the_last_checkpoint(monkeypatch):
    from webui.audit import models

    monkeypatch.setattr(models, "CHECKPOINT_EVERY", 5)
    events = _events(6)
    first = verify_recent()
    assert first.ok and first.checked == 6
    checkpoint = AuditCheckpoint.objects.get()
    assert checkpoint.event_id == events[-1].pk and checkpoint.count == 6
    newer = _events(2)
    second = verify_recent()
    assert second.ok and second.checked == 2 and second.head == newer[-1].hash
    assert verify_chain().checked == 8


def test_a_forged_checkpoint_is_ignored_and_the_walk_starts_over(monkeypatch):
    from webui.audit import models

    monkeypatch.setattr(models, "CHECKPOINT_EVERY", 10**9)
    events = _events(4)
    _sql("UPDATE audit_auditevent SET result = 'failed' WHERE id = %s", events[0].pk)
    AuditCheckpoint.objects.create(event_id=events[-1].pk, count=4, hash=events[-1].hash, mac="0" * 64)
    result = verify_recent()
    assert not result.ok and result.checked == 4
    assert any(f"Event {events[0].pk} was changed" in problem for problem in result.problems)


def test_an_edit_after_the_checkpoint_shows_on_the_page(monkeypatch):
    from webui.audit import models

    monkeypatch.setattr(models, "CHECKPOINT_EVERY", 3)
    _events(3)
    assert verify_recent().ok
    later = _events(2)
    _sql("UPDATE audit_auditevent SET targets = '[]' WHERE id = %s", later[0].pk)
    result = verify_recent()
    assert not result.ok and result.checked == 2


def test_an_old_unkeyed_log_is_keyed_by_the_migration_and_then_verifies():
    import importlib

    from django.apps import apps

    events = _events(3)
    # Write the chain as the unkeyed version did.
    previous = chain.GENESIS
    _sql("UPDATE audit_auditevent SET prev_hash = 'x' || id, hash = 'y' || id")
    for event in events:
        new_hash = chain.unkeyed_event_hash(previous, event.hashed_fields())
        _sql("UPDATE audit_auditevent SET prev_hash = %s, hash = %s WHERE id = %s", previous, new_hash, event.pk)
        previous = new_hash
    _sql("UPDATE audit_audithead SET last_hash = %s, mac = ''", previous)
    assert not verify_chain().ok
    migration = importlib.import_module("webui.audit.migrations.0003_key_existing_chain")
    migration.key_the_chain(apps, None)
    assert verify_chain().ok


def test_refused_messages_are_one_event_a_window_and_then_a_count(monkeypatch):
    import datetime

    from django.utils import timezone

    from webui.audit import refusals
    from webui.audit.models import RefusalBurst

    now = timezone.now()
    monkeypatch.setattr(refusals.timezone, "now", lambda: now)
    for n in range(500):
        refusals.refuse("pve1", f"forged {n}", {"task": "passthrough.scan"})
    assert AuditEvent.objects.count() == 1 and RefusalBurst.objects.get().count == 500
    assert refusals.close_finished_bursts("pve1") == 0  # the window is still open
    now += datetime.timedelta(seconds=61)
    assert refusals.close_finished_bursts("pve1") == 1
    summary = AuditEvent.objects.order_by("-id").first()
    assert summary.parameters["refused"] == 500 and "499 after the first" in summary.error
    refusals.refuse("pve1", "forged again", {})
    assert AuditEvent.objects.count() == 3 and verify_chain().ok


def test_the_worker_heartbeat_keeps_the_page_checkpoint_recent(monkeypatch, settings):
    from webui.audit import models
    from webui.jobs.worker import beat

    settings.PASSTHROUGH_HOSTNAME = "beating"
    monkeypatch.setattr(models, "CHECKPOINT_EVERY", 3)
    events = _events(4)
    beat()
    assert AuditCheckpoint.objects.get().event_id == events[-1].pk
    assert verify_recent().checked == 0
