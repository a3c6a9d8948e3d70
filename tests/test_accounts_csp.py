"""Every response carries one fixed Content-Security-Policy, and the templates give it nothing to refuse."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from tests.web_support import make_user, signed_in
from webui.accounts.roles import VIEWER

pytestmark = pytest.mark.django_db
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@pytest.fixture
def client() -> Client:
    return signed_in(make_user("vera", VIEWER))


@pytest.mark.parametrize("path", ["/accounts/sign-in/", "/jobs/", "/audit/", "/no-such-page/", "/healthz"])
def test_every_response_carries_the_content_security_policy(client, path):
    assert client.get(path)["Content-Security-Policy"] == POLICY


def test_the_sign_in_page_and_its_refusals_carry_it_too():
    anonymous = Client()
    assert anonymous.get(reverse("accounts:sign_in"))["Content-Security-Policy"] == POLICY
    response = anonymous.post(reverse("accounts:sign_in"), {"username": "nobody", "password": "x"})
    assert response["Content-Security-Policy"] == POLICY


def test_the_templates_hold_nothing_inline_that_the_policy_would_refuse():
    inline = re.compile(r"""\sstyle=|<style|<script(?![^>]*\ssrc=)|\son[a-z]+=|javascript:|hx-on""", re.IGNORECASE)
    found = [
        f"{path.relative_to(TEMPLATES)}:{number}: {line.strip()}"
        for path in sorted(TEMPLATES.rglob("*.html"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if inline.search(line)
    ]
    assert found == []
