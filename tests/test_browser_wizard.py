"""A real browser through the whole app: Debian's chromium, driven by Playwright.

Against a live server and a real worker on the asokolsky "duo" machine's tree (GT 1030 in
IOMMU group 2) behind the kernel double: sign in, walk the wizard's five steps with the
GPU (Apply runs a real bind job and the page shows vfio-pci), then the groups, topology,
job and audit pages. A screenshot of each page goes to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from passthrough.hosttrees import realworld
from passthrough.hosttrees.tree import write_tree
from passthrough.pci.scan import scan
from tests.browser_support import chromium, requires_chromium
from tests.web_support import DUO_GPU, DUO_GPU_AUDIO, PASSWORD, make_user  # noqa: E402
from tests.worker_support import requires_redis

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
JOB_TIMEOUT_MS = 30_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.slow,
    requires_redis,
    requires_chromium,
]


@pytest.fixture
def browser_page(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the live server's ORM calls happen
    # in its own thread, but Django refuses any ORM use here while the loop is running
    # (browser_support.chromium allows it).
    with chromium(monkeypatch) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(JOB_TIMEOUT_MS)
        yield page


class Shots:
    def __init__(self, page) -> None:
        self.page = page
        self.count = 0
        # Only this test's own pictures (NN-name.png): other browser tests keep theirs here too.
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob("[0-9][0-9]-*.png"):
            old.unlink()

    def __call__(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(SCREENSHOTS / f"{self.count:02d}-{name}.png"), full_page=True)


def test_sign_in_walk_the_wizard_with_the_gpu_then_the_groups_topology_and_audit_pages(
    start_worker, live_server, tmp_path, browser_page
):
    from playwright.sync_api import expect

    root = Path(write_tree(realworld.asokolsky_duo(), tmp_path / "duo"))
    start_worker(root, "duo")
    from webui.accounts.roles import OPERATOR

    make_user("otto", OPERATOR)
    page, shot, url = browser_page, Shots(browser_page), live_server.url

    # Sign in: every page sends an anonymous visitor here first.
    page.goto(url + "/hosts/duo/devices/")
    expect(page.locator("h1")).to_have_text("Sign in")
    shot("sign-in")
    page.fill("#id_username", "otto")
    page.fill("#id_password", PASSWORD)
    page.click("main button.primary")
    expect(page).to_have_url(url + "/hosts/duo/devices/")

    # Step 1: the host's checks, one verdict on top.
    page.goto(url + "/")
    expect(page.locator(".step-of")).to_have_text("Step 1 of 5")
    expect(page.locator(".verdict")).to_contain_text("Ready for passthrough.")
    expect(page.locator("li.check")).to_have_count(11)
    shot("wizard-1-check-this-host")
    page.click("text=Continue: pick a device")

    # Step 2: GPUs first; the GT 1030 brings its HDMI audio.
    expect(page.locator(".step-of")).to_have_text("Step 2 of 5")
    gpu = page.locator("li.candidate", has_text="GP108 [GeForce GT 1030]")
    expect(gpu).to_contain_text("also moves 01:00.1 GP108 High Definition Audio Controller")
    page.check(f"input[name=device][value='{DUO_GPU}']")
    shot("wizard-2-pick-a-device")
    page.click("text=Continue: review the plan")

    # Step 3: the plan; the worker works out the boot-time files and the page shows the diff.
    expect(page.locator(".step-of")).to_have_text("Step 3 of 5")
    expect(page.locator("pre.diff")).to_contain_text("+++ b/etc/udev/rules.d/90-passthrough-wizard-vfio.rules")
    expect(page.locator("table.members")).to_contain_text("01:00.1")
    page.check("input[name=persist]")
    shot("wizard-3-review-the-plan")
    page.click("text=Continue: apply")

    # Step 4: Apply runs the bind on the worker; the steps show live and the page ends on vfio-pci.
    expect(page.locator(".step-of")).to_have_text("Step 4 of 5")
    shot("wizard-4-apply-before")
    page.click("text=Apply: bind to vfio-pci")
    expect(page.locator(".verdict-pass")).to_contain_text("are on vfio-pci")
    expect(page.locator("table.steps").first).to_contain_text("drivers_probe: now on vfio-pci")
    page.click("text=Write these files")
    expect(page.locator(".job-live").nth(1)).to_contain_text("Succeeded")
    shot("wizard-4-applied")
    assert scan(root).device(DUO_GPU).driver == "vfio-pci"
    assert scan(root).device(DUO_GPU_AUDIO).driver == "vfio-pci"
    assert (root / "etc/udev/rules.d/90-passthrough-wizard-vfio.rules").is_file()
    page.click("text=Continue: give it to a VM")

    # Step 5: the VM config for the chosen hypervisor, with copy and download.
    expect(page.locator(".step-of")).to_have_text("Step 5 of 5")
    page.select_option("select[name=target]", "libvirt")
    expect(page.locator("#config-text")).to_contain_text('<hostdev mode="subsystem" type="pci" managed="yes">')
    expect(page.locator(".requirements")).to_contain_text("0000:01:00.0 is bound to vfio-pci.")
    expect(page.locator(".requirements h3")).to_contain_text("met now")
    page.click("button.copy[data-copy='#config-text']")
    expect(page.locator("button.copy[data-copy='#config-text']")).to_have_text("Copied")
    with page.expect_download() as download:
        page.click("a[download]")
    assert download.value.suggested_filename == "passthrough-vm.xml"
    shot("wizard-5-your-vm")
    page.click("main button.primary:has-text('Finish')")

    # Home is now the host at a glance.
    expect(page.locator(".message-success")).to_contain_text("The wizard is done.")
    expect(page.locator("body")).to_contain_text("On vfio-pci now")
    shot("dashboard")

    # The groups page, whole and filtered (htmx swaps the list; the URL follows).
    page.goto(url + "/hosts/duo/devices/")
    expect(page.locator("tbody.group")).to_have_count(15)
    expect(page.locator("#group-2")).to_contain_text("vfio-pci")
    expect(page.locator("#group-14")).to_contain_text("host-critical")
    shot("groups")
    page.fill("input[name=q]", "gt 1030")
    expect(page.locator("tbody.group")).to_have_count(1)
    expect(page).to_have_url(url + "/hosts/duo/devices/?q=gt+1030")  # the answer names the filtered URL
    shot("groups-filtered")

    # The device's own page, and the PCIe tree.
    page.click(f"a[href='/hosts/duo/devices/{DUO_GPU}/']")
    expect(page.locator("h1")).to_contain_text("GP108 [GeForce GT 1030]")
    shot("device")
    page.goto(url + "/hosts/duo/topology/")
    expect(page.locator("svg.topology")).to_be_visible()
    shot("topology")

    # The bind job's page offers to give the group back.
    page.goto(url + "/jobs/")
    page.locator("table.jobs tr", has_text=re.compile(r"Bind to vfio-pci 01:00\.0")).locator("a").click()
    expect(page.locator("h1")).to_contain_text("Bind to vfio-pci")
    expect(page.locator("button", has_text="Give back to the host")).to_be_visible()
    shot("job")

    # The audit log: every request and outcome, the chain intact.
    page.goto(url + "/audit/")
    expect(page.locator(".verdict-pass")).to_contain_text("The chain is intact.")
    expect(page.locator("table.audit")).to_contain_text("Bind to vfio-pci")
    expect(page.locator("table.audit")).to_contain_text("Bind to vfio-pci at every boot")
    shot("audit")
