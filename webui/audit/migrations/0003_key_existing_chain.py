"""Re-hash a log written before the chain was keyed, with the audit key.

Only a chain that verifies as it was written (plain SHA-256) is re-hashed, so keying never
launders an edit made before it: a chain already broken is left as it is, and the keyed
verification keeps reporting it. The new hashes keep each row's place in the chain.
"""

from django.db import migrations


def key_the_chain(apps, schema_editor):  # type: ignore[no-untyped-def]
    from webui.audit import chain
    from webui.audit.models import audit_key

    Event = apps.get_model("audit", "AuditEvent")
    Head = apps.get_model("audit", "AuditHead")
    events = list(Event.objects.order_by("id"))
    if not events:
        return
    previous = chain.GENESIS
    for event in events:
        fields = {name: getattr(event, name) for name in chain.HASHED_FIELDS}
        fields["created"] = event.created.isoformat()
        if event.prev_hash != previous or chain.unkeyed_event_hash(event.prev_hash, fields) != event.hash:
            return  # broken (or already keyed): leave it for audit_verify to report
        previous = event.hash
    key = audit_key()
    previous = chain.GENESIS
    # Two passes keep the unique constraints on prev_hash and hash satisfied at every step.
    for event in events:
        Event.objects.filter(pk=event.pk).update(prev_hash=f"rekey-p-{event.pk}", hash=f"rekey-h-{event.pk}")
    for event in events:
        fields = {name: getattr(event, name) for name in chain.HASHED_FIELDS}
        fields["created"] = event.created.isoformat()
        new_hash = chain.event_hash(key, previous, fields)
        Event.objects.filter(pk=event.pk).update(prev_hash=previous, hash=new_hash)
        previous = new_hash
    head = Head.objects.filter(pk=1).first()
    if head is not None:
        head.last_hash = previous
        head.mac = chain.seal(key, "head", head.count, previous)
        head.save()


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_keyed_chain_checkpoints_refusals")]

    operations = [migrations.RunPython(key_the_chain, migrations.RunPython.noop)]
