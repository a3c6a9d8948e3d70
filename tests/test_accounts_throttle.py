"""The sign-in throttle: failed sign-ins lock an account, and an address, for a while; said in words.

The count lives in the database (django-axes), so time is moved by moving the recorded
failures into the past, and a second process sees the same lock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.db import connection
from django.db.models import F
from django.test import Client
from django.urls import reverse

from tests.web_support import PASSWORD, make_user
from webui.accounts.roles import OPERATOR, VIEWER
from webui.accounts.throttle import in_words

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parent.parent


def sign_in(username: str, password: str, address: str = "10.0.0.1", client: Client | None = None):
    return (client or Client()).post(
        reverse("accounts:sign_in"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def fail(times: int, username: str = "vera", address: str = "10.0.0.1") -> list[int]:
    return [sign_in(username, f"wrong-{n}", address).status_code for n in range(times)]


def move_failures_back(minutes: float) -> None:
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - timedelta(minutes=minutes))


@pytest.fixture(autouse=True)
def fast_hashes(settings):
    # A hundred sign-ins at Django's real cost would take minutes; the throttle does not care.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def vera():
    return make_user("vera", VIEWER)


def test_ten_wrong_passwords_lock_the_account_and_then_even_the_right_one_is_refused(vera):
    assert fail(9) == [200] * 9  # each said as a plain wrong password
    tenth = sign_in("vera", "wrong-again")
    assert tenth.status_code == 429  # the failure that reaches the limit already says so
    client = Client()
    response = sign_in("vera", PASSWORD, client=client)
    assert response.status_code == 429
    assert "Too many failed sign-ins for this account. Try again in 15 minutes." in response.content.decode()
    assert 14 * 60 < int(response["Retry-After"]) <= 15 * 60
    assert "_auth_user_id" not in client.session  # not signed in


def test_the_account_lock_holds_from_any_address_and_spares_other_accounts(vera):
    make_user("otto", OPERATOR)
    for n in range(10):
        fail(1, "vera", f"10.0.1.{n}")  # one failure from each of ten addresses
    response = sign_in("vera", PASSWORD, "10.0.9.9")
    assert response.status_code == 429
    assert "for this account" in response.content.decode()
    assert sign_in("otto", PASSWORD, "10.0.9.9").status_code == 302


def test_an_address_that_failed_ten_times_over_several_accounts_is_locked_for_every_account(vera):
    for n in range(10):
        fail(1, f"guess{n}", "10.0.0.66")
    response = sign_in("vera", PASSWORD, "10.0.0.66")
    assert response.status_code == 429
    assert (
        "Too many failed sign-ins from your address (10.0.0.66). Try again in 15 minutes." in response.content.decode()
    )
    assert sign_in("vera", PASSWORD, "10.0.0.67").status_code == 302  # vera herself is not locked


def test_the_lock_lifts_after_the_cool_off(vera):
    fail(10)
    move_failures_back(14)
    response = sign_in("vera", PASSWORD)
    assert response.status_code == 429 and "Try again in 1 minute." in response.content.decode()
    move_failures_back(1.01)
    assert sign_in("vera", PASSWORD).status_code == 302


def test_attempts_while_locked_do_not_lengthen_the_wait(vera):
    fail(10)
    move_failures_back(10)
    fail(5)  # refused, and not counted
    assert "Try again in 5 minutes." in sign_in("vera", PASSWORD).content.decode()


def test_failures_older_than_the_cool_off_do_not_count(vera):
    fail(9)
    move_failures_back(16)
    assert fail(9) == [200] * 9
    assert sign_in("vera", PASSWORD).status_code == 302


def test_x_forwarded_for_is_ignored_unless_trusted(vera, settings):
    for n in range(10):
        Client().post(
            reverse("accounts:sign_in"),
            {"username": f"guess{n}", "password": "x"},
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=f"10.9.9.{n}",
        )
    assert sign_in("vera", PASSWORD, "127.0.0.1").status_code == 429  # all from the proxy's address
    AccessAttempt.objects.all().delete()
    settings.TRUST_X_FORWARDED_FOR = True
    for n in range(10):
        Client().post(
            reverse("accounts:sign_in"),
            {"username": f"guess{n}", "password": "x"},
            REMOTE_ADDR="127.0.0.1",
            HTTP_X_FORWARDED_FOR=f"6.6.6.6, 10.9.9.{n}",  # the client's claim, then what the proxy saw
        )
    response = Client().post(
        reverse("accounts:sign_in"),
        {"username": "vera", "password": PASSWORD},
        REMOTE_ADDR="127.0.0.1",
        HTTP_X_FORWARDED_FOR="10.9.9.100",
    )
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(1, "1 minute"), (60, "1 minute"), (61, "2 minutes"), (899.5, "15 minutes"), (3600, "1 hour"), (3900, "1 hour 5 minutes"), (7260, "2 hours 1 minute")],
)  # fmt: skip
def test_the_wait_is_said_in_whole_minutes_rounded_up(seconds, words):
    assert in_words(seconds) == words


def this_test_database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{quote(db['USER'] or '')}:{quote(db['PASSWORD'] or '')}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_another_process_sees_the_same_lock():
    """gunicorn runs two workers: a lock made in one holds in the other."""
    make_user("vera", VIEWER)
    fail(10)
    script = (
        "import sys, django; django.setup()\n"
        "from django.test import Client\n"
        "url, username, password = sys.argv[1:]\n"
        "r = Client().post(url, {'username': username, 'password': password}, REMOTE_ADDR='10.0.0.1')\n"
        "print(r.status_code)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webui.settings",
        "DATABASE_URL": this_test_database_url(),
        "ALLOWED_HOSTS": "testserver",
        "PASSTHROUGH_HOSTNAME": settings.PASSTHROUGH_HOSTNAME,
    }
    done = subprocess.run(
        [sys.executable, "-c", script, reverse("accounts:sign_in"), "vera", PASSWORD],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip().splitlines()[-1:] == ["429"], done.stderr[-2000:]
