"""The devices page in Debian's chromium: anchors clear the sticky table head, the address bar follows the filter.

No worker: the page reads a stored snapshot of the asokolsky "duo" machine.
"""

from __future__ import annotations

import pytest

from tests.browser_support import chromium, requires_chromium
from tests.web_support import PASSWORD, make_user  # noqa: E402
from webui.accounts.roles import OPERATOR

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    requires_chromium,
]


@pytest.fixture
def page(monkeypatch, duo, live_server):

    make_user("otto", OPERATOR)
    with chromium(monkeypatch) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 700})
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/accounts/sign-in/")
        page.fill("#id_username", "otto")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/accounts/sign-in/" not in url)
        yield page


def test_a_group_anchor_shows_the_groups_title_below_the_sticky_table_head(page, live_server):
    page.goto(f"{live_server.url}/hosts/duo/devices/#group-10")
    page.wait_for_timeout(200)
    title = page.locator("#group-10 h2").bounding_box()
    head = page.evaluate("document.querySelector('table.groups > thead th').getBoundingClientRect().bottom")
    assert title is not None and title["y"] >= head, (title, head)
    assert title["y"] < 700 / 2  # and it is at the top of the view, not scrolled past


def test_the_address_bar_follows_the_live_filter_and_reload_shows_the_same_list(page, live_server):
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/jobs/")
    page.goto(f"{live_server.url}/hosts/duo/devices/")
    page.fill("input[name=q]", "nvme")
    expect(page.locator("tbody.group")).to_have_count(1)
    expect(page).to_have_url(f"{live_server.url}/hosts/duo/devices/?q=nvme")
    expect(page.locator("#group-list a", has_text="Show all")).to_be_visible()
    page.fill("input[name=q]", "1030")
    expect(page).to_have_url(f"{live_server.url}/hosts/duo/devices/?q=1030")
    expect(page.locator("#group-2")).to_be_visible()
    page.reload()
    expect(page.locator("tbody.group")).to_have_count(1)
    expect(page.locator("#group-2")).to_be_visible()
    expect(page.locator("input[name=q]")).to_have_value("1030")
    page.go_back()  # the filter replaced the address as it went: Back leaves the page, no stale list
    expect(page).to_have_url(f"{live_server.url}/jobs/")
