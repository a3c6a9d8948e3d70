"""'Pin to NUMA node' in Debian's chromium: shown only for the targets that pin, and on the wizard's
configuration step a new choice redraws the text at once (htmx), with the choice in the URL.

The host is hwloc's capture of a real two-socket Xeon (a Xeon Phi 83:00.0 on node 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from tests.browser_support import chromium, requires_chromium
from tests.test_browser_layout import expect_text, signed_in_page
from tests.test_placement import needs_hwloc
from tests.test_views_vmconfig_numa import PHI, at_step_5, xeon_host
from tests.web_support import make_user

pytestmark = [pytest.mark.browser, pytest.mark.slow, requires_chromium, needs_hwloc]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots" / "numa-pin"


@pytest.fixture
def browser(monkeypatch):
    with chromium(monkeypatch) as browser:
        yield browser


@pytest.fixture
def xeon(db):
    return xeon_host()


def test_the_select_is_shown_only_for_the_targets_that_pin(xeon, live_server, browser):
    make_user("vera", "viewer")
    page = signed_in_page(browser, live_server, "vera")
    page.goto(f"{live_server.url}{reverse('vmconfig', kwargs={'host': 'xeon'})}?pick={PHI}")
    for target, shown in (("qemu", True), ("vmware", False), ("libvirt", True), ("hyperv", False), ("proxmox", True)):
        page.select_option("#id_target", target)
        assert page.locator("#id_numa_pin").is_visible() == shown, target
    page.select_option("#id_target", "qemu")
    page.select_option("#id_numa_pin", "0")
    page.click("text=Make the configuration")
    expect_text(page.locator("#config-text"), "exec taskset -c 0-7 qemu-system-x86_64")
    expect_text(page.locator(".numa-warning"), "Not the devices' node: 83:00.0 on node 1.")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "vmconfig-node-0.png"), full_page=True)
    page.close()


def test_on_the_wizards_last_step_a_new_choice_redraws_the_configuration(xeon, live_server, browser):
    vera = make_user("vera", "viewer")
    at_step_5(vera, xeon, PHI)
    page = signed_in_page(browser, live_server, "vera")
    page.goto(f"{live_server.url}{reverse('wizard_step', kwargs={'host': 'xeon', 'step': 5})}?target=qemu")
    expect_text(page.locator("#config-text"), "exec taskset -c 8-15 qemu-system-x86_64")
    page.select_option("#id_numa_pin", "0")  # no button: htmx sends the change
    expect_text(page.locator("#config-text"), "exec taskset -c 0-7 qemu-system-x86_64")
    assert "numa_pin=0" in page.url and "target=qemu" in page.url
    page.select_option("#id_numa_pin", "off")
    expect_text(page.locator("#config-text"), "exec qemu-system-x86_64")
    assert "taskset" not in page.locator("#config-text").inner_text()
    assert page.locator("#id_numa_pin").input_value() == "off"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "wizard-step-5-off.png"), full_page=True)
    page.close()
