"""Every URL in the URLconf, for every kind of visitor: sign-in, roles, methods and CSRF.

The table below names each route; a route added to the URLconf without a line here
fails ``test_every_route_is_in_this_table``, so none escapes these checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.web_support import DUO_GPU, DUO_GPU_GROUP, make_user, signed_in  # noqa: E402
from webui.hosts.models import Host
from webui.jobs.models import Job, State

PAGE = "page"  # GET for every signed-in user, 405 for POST
ACTION = "action"  # POST for operators only, 405 for GET
PUBLIC = "public"  # no sign-in needed
ACCOUNT = "account"  # any signed-in user, whatever the role
REDIRECT = "redirect"  # an old address: a 302 to where it moved, for anyone


@dataclass
class Route:
    kind: str
    kwargs: Callable[[dict[str, Any]], dict[str, Any]] = lambda made: {}
    query: str = ""
    status: int = 200  # what a signed-in GET answers (pages)


ROUTES: dict[str, Route] = {
    "healthz": Route(PUBLIC),
    "accounts:sign_in": Route(PUBLIC),
    "accounts:login": Route(REDIRECT, query="?next=/jobs/"),
    "accounts:sign_out": Route(ACCOUNT),
    "accounts:password": Route(ACCOUNT),
    "home": Route(PAGE, status=302),
    "hosts": Route(PAGE),
    "refresh_hosts": Route(ACTION),
    "fleet_readiness": Route(PAGE),
    "check_everywhere": Route(ACTION),
    "fleet_sriov": Route(PAGE),
    "fleet_sriov_apply": Route(ACTION),
    "host_home": Route(PAGE, lambda m: {"host": "duo"}, query="?dashboard=1"),
    "wizard": Route(PAGE, lambda m: {"host": "duo"}, status=302),
    "wizard_step": Route(PAGE, lambda m: {"host": "duo", "step": 1}),
    "wizard_submit": Route(ACTION, lambda m: {"host": "duo", "step": 1}),
    "wizard_restart": Route(ACTION, lambda m: {"host": "duo"}),
    "readiness": Route(PAGE, lambda m: {"host": "duo"}),
    "apply_fix": Route(ACTION, lambda m: {"host": "duo", "check": "iommu_passthrough_mode"}),
    "scan": Route(ACTION, lambda m: {"host": "duo"}),
    "diagnose": Route(PAGE, lambda m: {"host": "duo"}),
    "groups": Route(PAGE, lambda m: {"host": "duo"}),
    "device": Route(PAGE, lambda m: {"host": "duo", "address": DUO_GPU}),
    "bind_group": Route(ACTION, lambda m: {"host": "duo", "group": DUO_GPU_GROUP}),
    "review_group": Route(PAGE, lambda m: {"host": "duo", "group": DUO_GPU_GROUP}),
    "give_back_group": Route(ACTION, lambda m: {"host": "duo", "group": DUO_GPU_GROUP}),
    "reset_device": Route(ACTION, lambda m: {"host": "duo", "address": DUO_GPU}),
    "set_vfs": Route(ACTION, lambda m: {"host": "duo", "address": DUO_GPU}),
    "topology": Route(PAGE, lambda m: {"host": "duo"}),
    "vmconfig": Route(PAGE, lambda m: {"host": "duo"}),
    "vmconfig_download": Route(
        PAGE,
        lambda m: {"host": "duo"},
        query=f"?devices={DUO_GPU}&target=qemu&name=vm1&firmware=ovmf&machine=q35&memory_mib=4096&vcpus=2",
    ),
    "jobs": Route(PAGE),
    "job": Route(PAGE, lambda m: {"pk": m["bind_job"].pk}),
    "job_undo": Route(ACTION, lambda m: {"pk": m["persist_job"].pk}),
    "job_give_back": Route(ACTION, lambda m: {"pk": m["bind_job"].pk}),
    "job_cancel": Route(ACTION, lambda m: {"pk": m["bind_job"].pk}),
    "audit": Route(PAGE),
    "audit_export": Route(PAGE, lambda m: {"fmt": "csv"}),
}


def route_names(patterns: list[Any], namespace: str = "") -> list[str]:
    names = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            names += route_names(pattern.url_patterns, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.append(namespace + pattern.name)
    return names


def test_every_route_is_in_this_table():
    assert sorted(route_names(get_resolver().url_patterns)) == sorted(ROUTES)


@pytest.fixture
def made(duo: Host) -> dict[str, Any]:
    owner = make_user("olga", None)
    bind_job = Job.objects.create(
        host=duo,
        user=owner,
        actor="olga",
        action="bind_vfio",
        targets=[DUO_GPU],
        state=State.SUCCEEDED,
        result={"state_before": {"functions": {DUO_GPU: {"driver": None, "driver_override": None}}}},
    )
    persist_job = Job.objects.create(
        host=duo,
        user=owner,
        actor="olga",
        action="persist_binding",
        targets=[DUO_GPU],
        state=State.SUCCEEDED,
        result={"undo": {"files": []}},
    )
    return {"bind_job": bind_job, "persist_job": persist_job}


def url_of(name: str, made: dict[str, Any]) -> str:
    route = ROUTES[name]
    return reverse(name, kwargs=route.kwargs(made)) + route.query


def names_of(kind: str) -> list[str]:
    return [name for name, route in ROUTES.items() if route.kind == kind]


@pytest.mark.parametrize("name", names_of(PAGE) + names_of(ACTION) + names_of(ACCOUNT))
def test_anonymous_visitors_are_sent_to_sign_in(name, made):
    url = url_of(name, made)
    method = Client().post if ROUTES[name].kind == ACTION else Client().get
    response = method(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:sign_in") + "?next=")


@pytest.mark.parametrize("name", names_of(PUBLIC))
def test_public_routes_answer_without_sign_in(name, made, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # /healthz answers 503 then, never a redirect
    response = Client().get(url_of(name, made))
    assert response.status_code in (200, 503)


@pytest.mark.parametrize("name", names_of(REDIRECT))
def test_old_addresses_redirect_anyone_keeping_next(name, made, viewer_client):
    for client in (Client(), viewer_client):
        response = client.get(url_of(name, made))
        assert response.status_code == 302
        assert response["Location"] == reverse("accounts:sign_in") + "?next=/jobs/"


@pytest.mark.parametrize("name", names_of(PAGE))
def test_viewers_read_every_page(name, made, viewer_client):
    response = viewer_client.get(url_of(name, made))
    assert response.status_code == ROUTES[name].status, response.content[:500]
    if response.status_code == 302:
        assert not response["Location"].startswith(reverse("accounts:sign_in"))


@pytest.mark.parametrize("name", names_of(ACTION))
def test_viewers_get_403_on_every_action(name, made, viewer_client):
    response = viewer_client.post(url_of(name, made))
    assert response.status_code == 403
    assert b"operator" in response.content  # says why, in words
    assert not Job.objects.exclude(pk__in=[made["bind_job"].pk, made["persist_job"].pk]).exists()


@pytest.mark.parametrize("name", names_of(ACTION))
def test_operators_run_every_action(name, made, operator_client, test_broker):
    response = operator_client.post(url_of(name, made), {"acknowledged": []})
    assert response.status_code == 302, response.content[:500]
    assert not response["Location"].startswith(reverse("accounts:sign_in"))


@pytest.mark.parametrize("name", names_of(ACTION))
def test_actions_refuse_get_with_405(name, made, operator_client):
    assert operator_client.get(url_of(name, made)).status_code == 405


@pytest.mark.parametrize("name", names_of(PAGE))
def test_pages_refuse_post_with_405(name, made, operator_client):
    assert operator_client.post(url_of(name, made)).status_code == 405


@pytest.mark.parametrize("name", names_of(ACTION))
def test_actions_refuse_a_post_without_the_csrf_token(name, made, operator):
    client = signed_in(operator, enforce_csrf_checks=True)
    response = client.post(url_of(name, made))
    assert response.status_code == 403
    assert b"Nothing was changed" in response.content
    assert not Job.objects.exclude(pk__in=[made["bind_job"].pk, made["persist_job"].pk]).exists()


def test_a_post_with_the_csrf_token_from_the_page_is_accepted(made, operator, test_broker):
    client = signed_in(operator, enforce_csrf_checks=True)
    page = client.get(reverse("readiness", kwargs={"host": "duo"}))
    token = page.context["csrf_token"]
    assert f'"X-CSRFToken": "{token}"'.encode() in page.content  # what htmx sends, from <body hx-headers>
    response = client.post(reverse("scan", kwargs={"host": "duo"}), HTTP_X_CSRFTOKEN=str(token))
    assert response.status_code == 302
    assert Job.objects.filter(action="scan").count() == 1


def test_sign_out_is_a_post(made, viewer):
    client = signed_in(viewer)
    assert client.get(reverse("accounts:sign_out")).status_code == 405
    assert client.post(reverse("accounts:sign_out")).status_code == 302
    assert client.get(reverse("readiness", kwargs={"host": "duo"})).status_code == 302
