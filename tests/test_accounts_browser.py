"""In Debian's chromium: the Content-Security-Policy refuses nothing the pages use, and htmx still works.

No worker: the pages read a stored snapshot of the asokolsky "duo" machine.
"""

from __future__ import annotations

import pytest

from tests.browser_support import chromium, requires_chromium
from tests.web_support import PASSWORD, make_user
from webui.accounts.roles import VIEWER

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    requires_chromium,
]


@pytest.fixture
def page(monkeypatch):
    with chromium(monkeypatch) as browser:
        page = browser.new_page()
        page.set_default_timeout(15_000)
        yield page


def test_the_pages_run_under_the_policy_with_nothing_refused(duo, live_server, page):
    make_user("vera", VIEWER)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.goto(f"{live_server.url}/accounts/sign-in/")
    page.fill("#id_username", "vera")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/sign-in/" not in url)
    for path in ("/hosts/duo/devices/", "/hosts/duo/topology/", "/jobs/", "/audit/"):
        page.goto(f"{live_server.url}{path}")
        assert page.evaluate("typeof htmx") == "object", path  # the static script ran
    page.goto(f"{live_server.url}/hosts/duo/devices/")
    with page.expect_response(lambda response: "q=nvme" in response.url):
        page.fill("input[name=q]", "nvme")  # the live filter is an htmx request
    page.wait_for_function("document.querySelector('#group-list .count').textContent.includes('of')")
    refused = [line for line in console if "Content Security Policy" in line]
    assert refused == []
