"""Accounts: the first admin with a one-time password, the two roles, sign-in and the forced password change."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from webui.accounts.roles import OPERATOR, VIEWER, can_operate, set_role

pytestmark = pytest.mark.django_db


def printed_password(output: str) -> str:
    match = re.search(r"password: (\S+)", output)
    assert match, output
    return match.group(1)


def ensure_admin(*args: str) -> str:
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


def test_migrate_leaves_both_roles_with_only_the_operator_running_jobs():
    viewer, operator = Group.objects.get(name=VIEWER), Group.objects.get(name=OPERATOR)
    assert not viewer.permissions.exists()
    assert list(operator.permissions.values_list("content_type__app_label", "codename")) == [("jobs", "run_jobs")]


def test_the_first_start_creates_an_admin_and_prints_its_password_once():
    output = ensure_admin()
    password = printed_password(output)
    assert "shown only now" in output and len(password) >= 16
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    assert admin.groups.filter(name=OPERATOR).exists()
    assert ensure_admin() == ""  # the next start says nothing and changes nothing
    admin.refresh_from_db()
    assert admin.check_password(password)


def test_a_name_taken_by_a_non_admin_is_refused_in_words():
    get_user_model().objects.create_user("admin", password="x-long-password")
    with pytest.raises(CommandError, match="exists but is not an active admin"):
        ensure_admin()


def test_the_one_time_password_must_be_replaced_at_the_first_sign_in(db):
    password = printed_password(ensure_admin())
    client = Client()
    response = client.post(reverse("accounts:sign_in"), {"username": "admin", "password": password}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("accounts:password")
    assert "You signed in with a one-time password" in response.content.decode()
    assert client.get(reverse("jobs"))["Location"] == reverse("accounts:password")  # nothing else until then
    new = "a-brand-new-passphrase-42"
    response = client.post(
        reverse("accounts:password"),
        {"old_password": password, "new_password1": new, "new_password2": new},
        follow=True,
    )
    assert "Your password is changed." in response.content.decode()
    assert client.get(reverse("jobs")).status_code == 200  # still signed in, free to go
    again = Client()
    again.post(reverse("accounts:sign_in"), {"username": "admin", "password": new})
    assert again.get(reverse("jobs")).status_code == 200


def test_add_user_makes_a_viewer_or_an_operator_with_a_one_time_password():
    out = StringIO()
    call_command("add_user", "vera", stdout=out)
    vera = get_user_model().objects.get(username="vera")
    assert vera.check_password(re.search(r"shown only now\): (\S+)", out.getvalue()).group(1))
    assert not can_operate(vera)
    call_command("add_user", "otto", "--role", "operator", stdout=StringIO())
    assert can_operate(get_user_model().objects.get(username="otto"))
    with pytest.raises(CommandError, match="exists already"):
        call_command("add_user", "vera", stdout=StringIO())


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("viewer", False),
        ("operator", True),
        ("superuser", True),
        ("direct", True),
        ("nobody", False),
        ("inactive", False),
    ],
)
def test_can_operate_agrees_with_django_has_perm(kind, expected):
    users = get_user_model()
    if kind == "superuser":
        user = users.objects.create_superuser("root", password="x-long-password")
    else:
        user = users.objects.create_user(kind, password="x-long-password", is_active=kind != "inactive")
    if kind in ("viewer", "operator"):
        set_role(user, kind)
    if kind in ("direct", "inactive"):
        user.user_permissions.add(Permission.objects.get(codename="run_jobs"))
    fresh = users.objects.get(pk=user.pk)
    assert can_operate(fresh) is expected
    assert users.objects.get(pk=user.pk).has_perm("jobs.run_jobs") is expected


def test_a_wrong_password_is_said_in_words():
    get_user_model().objects.create_user("vera", password="x-long-password")
    response = Client().post(reverse("accounts:sign_in"), {"username": "vera", "password": "nope"})
    assert response.status_code == 200
    assert "do not match an account" in response.content.decode()


def test_anonymous_visitors_are_sent_to_sign_in_and_back_where_they_were_going():
    get_user_model().objects.create_user("vera", password="x-long-password")
    client = Client()
    response = client.get(reverse("jobs"))
    assert response["Location"] == f"{reverse('accounts:sign_in')}?next={reverse('jobs')}"
    response = client.post(
        reverse("accounts:sign_in"), {"username": "vera", "password": "x-long-password", "next": reverse("jobs")}
    )
    assert response["Location"] == reverse("jobs")


def test_set_role_keeps_a_user_in_one_role():
    user = get_user_model().objects.create_user("vera", password="x-long-password")
    set_role(user, OPERATOR)
    set_role(user, VIEWER)
    assert list(user.groups.values_list("name", flat=True)) == [VIEWER]
    with pytest.raises(ValueError, match="is not a role"):
        set_role(user, "admin")
