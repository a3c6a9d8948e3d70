"""Every account event reaches the audit log: who, from where, what, and how it ended; never a password."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from tests.web_support import PASSWORD, make_user, signed_in
from webui.accounts.events import AccountAction
from webui.accounts.roles import OPERATOR, VIEWER, set_role
from webui.audit.models import AuditEvent, RefusalBurst, verify_chain
from webui.wizard.forms import AuditFilterForm

pytestmark = pytest.mark.django_db
HOST = settings.PASSTHROUGH_HOSTNAME


@pytest.fixture(autouse=True)
def fast_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def the_event(action: str) -> AuditEvent:
    found = events(action)
    assert len(found) == 1, [(event.action, event.parameters) for event in AuditEvent.objects.all()]
    return found[0]


def fields(event: AuditEvent) -> tuple:
    return event.actor, event.source, event.host, event.result, event.parameters, event.user


def sign_in(username: str, password: str, client: Client | None = None, address: str = "10.0.0.7"):
    return (client or Client()).post(
        reverse("accounts:sign_in"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def test_a_sign_in_is_recorded_with_the_user_and_the_address():
    vera = make_user("vera", VIEWER)
    assert sign_in("vera", PASSWORD).status_code == 302
    event = the_event("sign_in")
    assert fields(event) == ("vera", "web", HOST, "succeeded", {"address": "10.0.0.7"}, vera)
    assert verify_chain().ok


def test_a_failed_sign_in_records_the_name_tried_and_the_address_but_never_the_password():
    make_user("vera", VIEWER)
    sign_in("vera", "my-secret-guess")
    event = the_event("sign_in_failed")
    assert fields(event) == ("anonymous", "web", HOST, "failed", {"address": "10.0.0.7", "username": "vera"}, None)
    assert "my-secret-guess" not in json.dumps(event.hashed_fields())


def test_a_lockout_is_recorded_as_refused_with_the_lock_and_when_it_lifts():
    make_user("vera", VIEWER)
    for n in range(10):
        sign_in("vera", f"wrong-{n}")
    sign_in("vera", PASSWORD)
    assert len(events("sign_in_failed")) == 10  # the refused eleventh was never checked
    # The tenth failure locks; it and every refusal after it are one burst: one event now, a count later.
    for n in range(50):
        sign_in("vera", f"still-wrong-{n}")
    locked = events("sign_in_locked_out")
    assert [event.result for event in locked] == ["refused"]
    assert RefusalBurst.objects.get(action="sign_in_locked_out").count == 52  # the tenth, the eleventh, 50 more
    parameters = locked[-1].parameters
    assert parameters["username"] == "vera" and parameters["address"] == "10.0.0.7" and parameters["lock"] == "account"
    assert "until" in parameters and "Try again in 15 minutes" in locked[-1].error
    assert PASSWORD not in json.dumps([event.hashed_fields() for event in AuditEvent.objects.all()])


def test_signing_out_is_recorded():
    vera = make_user("vera", VIEWER)
    client = signed_in(vera)
    client.post(reverse("accounts:sign_out"), REMOTE_ADDR="10.0.0.8")
    event = the_event("sign_out")
    assert fields(event) == ("vera", "web", HOST, "succeeded", {"address": "10.0.0.8", "reason": "signed out"}, vera)


def test_a_password_change_is_recorded_and_so_is_a_refused_one():
    vera = make_user("vera", VIEWER)
    client = signed_in(vera)
    new = "a-brand-new-passphrase-42"
    client.post(reverse("accounts:password"), {"old_password": "nope", "new_password1": new, "new_password2": new})
    client.post(reverse("accounts:password"), {"old_password": PASSWORD, "new_password1": new, "new_password2": new})
    refused, changed = events("password_change")
    assert (refused.actor, refused.result, refused.user) == ("vera", "failed", vera)
    assert list(refused.parameters["refused"]) == ["old_password"] and "incorrectly" in refused.error
    assert (changed.actor, changed.result, changed.user) == ("vera", "succeeded", vera)
    recorded = json.dumps([event.hashed_fields() for event in AuditEvent.objects.all()])
    assert new not in recorded and PASSWORD not in recorded


def test_add_user_and_ensure_admin_record_the_new_account_from_the_shell():
    call_command("add_user", "vera", stdout=StringIO())
    call_command("ensure_admin", stdout=StringIO())
    vera, admin = events("user_create")
    assert re.fullmatch(r"shell:.+", vera.actor) and (vera.source, vera.host, vera.result) == (
        "shell",
        HOST,
        "succeeded",
    )
    assert vera.parameters == {"username": "vera", "role": VIEWER, "admin": False}
    assert admin.parameters == {"username": "admin", "role": OPERATOR, "admin": True}
    # The admin joined the operator group: a role change, after its creation.
    assert [(e.action, e.parameters.get("username")) for e in AuditEvent.objects.order_by("id")] == [
        ("user_create", "vera"),
        ("user_create", "admin"),
        ("role_change", "admin"),
    ]


def test_joining_and_leaving_the_operator_group_are_role_changes_however_made():
    vera = make_user("vera", VIEWER)
    assert not AuditEvent.objects.exists()  # a new viewer is no role change
    set_role(vera, OPERATOR)
    set_role(vera, OPERATOR)  # already one: nothing changes, nothing recorded
    set_role(vera, VIEWER)
    operators = Group.objects.get(name=OPERATOR)
    operators.user_set.add(vera)  # from the group's side
    operators.user_set.clear()
    vera.groups.add(operators)
    vera.groups.clear()
    changes = [(e.parameters["from"], e.parameters["to"]) for e in events("role_change")]
    assert changes == [(VIEWER, OPERATOR), (OPERATOR, VIEWER)] * 3
    event = events("role_change")[0]
    assert event.source == "shell" and event.parameters["username"] == "vera" and event.parameters["group"] == OPERATOR


def test_deactivating_and_reactivating_an_account_are_recorded_and_a_sign_in_is_not_one():
    vera = make_user("vera", VIEWER)
    sign_in("vera", PASSWORD)  # stamps last_login: a save that cannot change is_active
    vera.is_active = False
    vera.save()
    vera.save()
    vera.is_active = True
    vera.save(update_fields=["is_active"])
    assert [(e.action, e.parameters) for e in AuditEvent.objects.exclude(action="sign_in").order_by("id")] == [
        ("user_deactivate", {"username": "vera"}),
        ("user_activate", {"username": "vera"}),
    ]


def test_the_audit_filter_offers_every_account_action_and_filters_by_it(viewer_client):
    make_user("otto", VIEWER)
    sign_in("otto", PASSWORD)
    sign_in("otto", "wrong")
    for action in AccountAction:
        assert AuditFilterForm({"action": action.value}).is_valid(), action
    html = viewer_client.get(reverse("audit"), {"action": "sign_in_failed"}).content.decode()
    shown = [int(number) for number in re.findall(r"<tr>\s*<td>(\d+)</td>", html)]
    assert shown == [the_event("sign_in_failed").id]


def test_a_deactivated_account_cannot_sign_in():
    vera = make_user("vera", VIEWER)
    get_user_model().objects.filter(pk=vera.pk).update(is_active=False)
    assert sign_in("vera", PASSWORD).status_code == 200
    assert the_event("sign_in_failed").parameters["username"] == "vera"


def test_a_password_set_from_the_shell_is_recorded_once_and_a_rehash_at_sign_in_is_not(monkeypatch, settings):
    vera = make_user("vera", VIEWER)
    # manage.py changepassword, answering its two getpass prompts.
    answers = iter(["a-shell-chosen-passphrase-7"] * 2)
    monkeypatch.setattr(
        "django.contrib.auth.management.commands.changepassword.getpass.getpass", lambda *a, **k: next(answers)
    )
    call_command("changepassword", "vera", stdout=StringIO())
    # A sign-in under a stronger hasher rehashes the same password: no change.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    assert sign_in("vera", "a-shell-chosen-passphrase-7").status_code == 302
    vera.refresh_from_db()
    assert vera.password.startswith("pbkdf2_")  # it was rehashed, and saved
    vera.first_name = "Vera"
    vera.save()  # a save that sets no password
    event = the_event("password_change")
    assert re.fullmatch(r"shell:.+", event.actor) and (event.source, event.result) == ("shell", "succeeded")
    assert event.parameters == {"username": "vera"}
    recorded = json.dumps([e.hashed_fields() for e in AuditEvent.objects.all()])
    assert "a-shell-chosen-passphrase-7" not in recorded


def test_the_password_page_records_its_change_once():
    vera = make_user("vera", VIEWER)
    new = "a-brand-new-passphrase-42"
    signed_in(vera).post(
        reverse("accounts:password"), {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
    )
    assert the_event("password_change").source == "web"
