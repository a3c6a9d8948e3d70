"""The host list in Debian's chromium: three hosts, one offline, refreshed with one click.

Signed in as an operator, home opens the host list (several hosts, none looked at yet);
pve2's worker has been silent for 7 minutes, so its row, the header's switcher and its own
pages say "offline". "Refresh every host" asks the two online hosts (their scans wait in the
test's Redis, where no worker takes them), says pve2 was not asked, and the page follows the
scans: when they end, htmx swaps in the final table without a reload. Screenshots at a
phone's and a laptop's width go to test-artifacts/screenshots/fleet/.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.browser_support import chromium, requires_chromium
from tests.test_browser_layout import OVERFLOW
from tests.test_fleet_views import vfio_host
from tests.web_support import PASSWORD, make_user, no_iommu_host, snapshot_host
from webui.accounts.roles import OPERATOR
from webui.hosts.models import Host
from webui.jobs.models import Job, State

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots" / "fleet"
pytestmark = [pytest.mark.browser, pytest.mark.slow, requires_chromium]
# The colour of --fail-bg (what a failed check's badge wears), computed by the browser.
FAIL_BACKGROUND = """() => {
  const probe = document.createElement("span");
  probe.style.background = "var(--fail-bg)";
  document.body.append(probe);
  const colour = getComputedStyle(probe).backgroundColor;
  probe.remove();
  return colour;
}"""


@pytest.fixture
def browser(monkeypatch):
    with chromium(monkeypatch) as browser:
        yield browser


def three_hosts(tmp_path: Path) -> None:
    snapshot_host("pve1", vfio_host(), tmp_path / "pve1")
    snapshot_host("pve2", vfio_host(), tmp_path / "pve2")
    snapshot_host("pve3", no_iommu_host(), tmp_path / "pve3")
    Host.objects.filter(name="pve1").update(kernel="6.8.12-4-pve", cpu_vendor="GenuineIntel", iommu_enabled=True)
    Host.objects.filter(name="pve2").update(last_seen=timezone.now() - datetime.timedelta(minutes=7))


def test_the_host_list_shows_the_offline_host_and_follows_a_refresh(
    transactional_db, live_server, tmp_path, browser, test_broker, settings
):
    settings.PASSTHROUGH_OFFLINE_AFTER = 90
    three_hosts(tmp_path)
    make_user("otto", OPERATOR)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/accounts/sign-in/")
    page.fill("#id_username", "otto")
    page.fill("#id_password", PASSWORD)
    page.click("main button.primary")
    page.wait_for_url(f"{live_server.url}{reverse('hosts')}")

    offline = page.locator('tr[data-host="pve2"] .badge-fail')
    assert offline.inner_text() == "offline" and offline.is_visible()
    red = page.evaluate(FAIL_BACKGROUND)
    assert red.startswith("rgb(") and offline.evaluate("badge => getComputedStyle(badge).backgroundColor") == red
    assert "not seen for 7" in page.locator('tr[data-host="pve2"]').inner_text()
    for name in ("pve1", "pve3"):
        assert page.locator(f'tr[data-host="{name}"]').inner_text().split("\t")[1].startswith("online")
    page.locator("details.switcher summary").click()
    assert page.locator("details.switcher li", has_text="pve2").inner_text().strip() == "pve2 offline"
    assert page.locator("details.switcher li", has_text="pve1").inner_text().strip() == "pve1"
    page.screenshot(path=str(SCREENSHOTS / "1366-hosts.png"), full_page=True)

    page.click("text=Refresh every host")
    page.wait_for_selector("text=Scanning: 0 of 2 done.")
    assert page.locator(".message-success").inner_text() == "Asked 2 hosts for a fresh scan: pve1, pve3."
    assert "Not asked: pve2 has not been seen for 7 minutes." in page.locator(".message-info").inner_text()
    assert page.locator('tr[data-host="pve2"] td').last.inner_text() == "not asked"
    page.screenshot(path=str(SCREENSHOTS / "1366-refreshing.png"), full_page=True)
    url = page.url
    Job.objects.filter(action="scan").update(state=State.SUCCEEDED, finished=timezone.now(), message="Scan done.")
    page.wait_for_selector("text=All 2 scans ended; the table shows what each found.")
    assert page.url == url, "htmx swapped the table in; the page did not reload"
    assert page.locator('tr[data-host="pve1"] td').last.inner_text() == "Succeeded"

    page.goto(live_server.url + reverse("readiness", kwargs={"host": "pve2"}))
    line = page.locator(".snapshot-line").inner_text()
    assert "offline" in line and "pve2 has not been seen for 7 minutes" in line

    phone = browser.new_page(viewport={"width": 390, "height": 900})
    phone.context.add_cookies(page.context.cookies())
    phone.goto(live_server.url + reverse("hosts"))
    measured = phone.evaluate(OVERFLOW)
    assert measured["scrollWidth"] <= measured["innerWidth"], measured
    phone.screenshot(path=str(SCREENSHOTS / "390-hosts.png"), full_page=True)
