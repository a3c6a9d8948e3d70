"""Every page at a phone's width (390 px) and a laptop's (1366 px), in Debian's chromium.

No page may be wider than the window (``document.documentElement.scrollWidth >
innerWidth``): a table may scroll inside its own box, the document never does. A
screenshot of every page at both widths goes to test-artifacts/screenshots/layout/, to
be looked at. The host is the asokolsky "duo" machine with a second host beside it (so
the header shows the host switcher); its jobs are real ones, run in this process on the
tree through the kernel double, so the job and wizard pages show what a worker records.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from passthrough.hosttrees import realworld
from passthrough.kerneldouble import KernelDouble
from tests.browser_support import chromium, requires_chromium
from tests.web_support import DUO_GPU, DUO_GPU_AUDIO, DUO_GPU_GROUP, PASSWORD, make_user, snapshot_host
from webui.accounts.roles import OPERATOR
from webui.hosts.models import Host
from webui.jobs.models import Job, State
from webui.jobs.runner import execute
from webui.wizard.models import WizardState

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots" / "layout"
WIDTHS = (390, 1366)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    requires_chromium,
]

# What sticks out past the window's right edge, deepest first, to name in a failure.
OVERFLOW = """() => {
  const width = window.innerWidth;
  const found = [];
  for (const element of document.querySelectorAll("body *")) {
    const box = element.getBoundingClientRect();
    if (box.right > width + 0.5 && box.width > 0) {
      let inside = element.parentElement;
      let clipped = false;
      while (inside && inside !== document.body) {
        const style = getComputedStyle(inside);
        if (["auto", "scroll", "hidden", "clip"].includes(style.overflowX)) { clipped = true; break; }
        inside = inside.parentElement;
      }
      if (!clipped) {
        found.push(`${element.tagName.toLowerCase()}${element.id ? "#" + element.id : ""}` +
          `${element.className && typeof element.className === "string" ? "." + element.className.trim().split(/\\s+/).join(".") : ""}` +
          ` (right edge ${Math.round(box.right)})`);
      }
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: width, culprits: found.slice(-6)};
}"""


@pytest.fixture
def browser(monkeypatch):
    with chromium(monkeypatch) as browser:
        yield browser


def run(host: Host, user, action: str, targets: list[str], parameters: dict) -> Job:
    """A job as the worker runs it: marked running, then executed on the host's tree (kernel double)."""
    job = Job.objects.create(
        host=host, user=user, actor=user.username, action=action, targets=targets, parameters=parameters,
        state=State.RUNNING, started=timezone.now(),
    )  # fmt: skip
    return execute(job, KernelDouble(host.root))


def a_host_with_history(tmp_path: Path):
    """duo after the wizard: a plan, a bind and binding at boot, a scan; a second host; jobs of every kind."""
    duo, _ = snapshot_host("duo", realworld.asokolsky_duo(), tmp_path / "duo")
    snapshot_host("t480", realworld.schplorg_t480(), tmp_path / "t480")
    otto = make_user("otto", OPERATOR)
    moves = [DUO_GPU, DUO_GPU_AUDIO]
    drivers = {DUO_GPU: None, DUO_GPU_AUDIO: None}
    plan = run(
        duo, otto, "plan_change", moves, {"change": "persist_binding", "native_drivers": drivers, "confirm": None}
    )
    bind = run(duo, otto, "bind_vfio", [DUO_GPU], {"confirm": None, "release_console": False})
    persist = run(
        duo, otto, "persist_binding", moves,
        {"native_drivers": drivers, "confirm": None, "fingerprint": plan.result["plan"].get("fingerprint")},
    )  # fmt: skip
    assert (plan.state, bind.state, persist.state) == (State.SUCCEEDED,) * 3, (plan.message, bind.message)
    scan = run(duo, otto, "scan", [], {})
    queued = Job.objects.create(host=duo, user=otto, actor="otto", action="reset", targets=[DUO_GPU], parameters={})
    WizardState.objects.create(
        user=otto, host=duo, step=5, reached=5, device=DUO_GPU, persist=True, target="proxmox",
        plan_job=plan, bind_job=bind, persist_job=persist,
    )  # fmt: skip
    return duo, {"bind": bind, "persist": persist, "scan": scan, "queued": queued}


def pages(jobs: dict[str, Job]) -> list[tuple[str, str]]:
    host = {"host": "duo"}
    return [
        *((f"wizard-{step}", reverse("wizard_step", kwargs={"host": "duo", "step": step})) for step in range(1, 6)),
        ("overview", reverse("host_home", kwargs=host) + "?dashboard=1"),
        ("readiness", reverse("readiness", kwargs=host)),
        ("readiness-t480", reverse("readiness", kwargs={"host": "t480"})),
        ("devices", reverse("groups", kwargs=host)),
        ("devices-filtered", reverse("groups", kwargs=host) + "?q=nvme&kind="),
        ("device", reverse("device", kwargs={**host, "address": DUO_GPU})),
        ("topology", reverse("topology", kwargs=host)),
        ("vmconfig", reverse("vmconfig", kwargs=host) + f"?pick={DUO_GPU}"),
        *(
            (
                f"vmconfig-{target}",
                reverse("vmconfig", kwargs=host) + f"?devices={DUO_GPU}&target={target}"
                "&name=gaming&firmware=ovmf&machine=q35&memory_mib=16384&vcpus=8",
            )
            for target in ("qemu", "libvirt", "proxmox", "vmware", "hyperv")
        ),  # fmt: skip
        ("jobs", reverse("jobs")),
        *((f"job-{name}", reverse("job", kwargs={"pk": job.pk})) for name, job in jobs.items()),
        ("audit", reverse("audit")),
        ("password", reverse("accounts:password")),
        ("not-found", "/hosts/duo/devices/0000:99:00.0/"),
    ]


def overflow(page) -> str | None:
    measured = page.evaluate(OVERFLOW)
    if measured["scrollWidth"] <= measured["innerWidth"]:
        return None
    return f"{measured['scrollWidth']} px wide in {measured['innerWidth']}: {', '.join(measured['culprits'])}"


def test_every_page_fits_390_and_1366_pixels_without_sideways_scrolling(db, live_server, tmp_path, browser):
    host, jobs = a_host_with_history(tmp_path)
    assert DUO_GPU_GROUP == 2
    wide: list[str] = []
    for width in WIDTHS:
        folder = SCREENSHOTS / str(width)
        folder.mkdir(parents=True, exist_ok=True)
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/accounts/sign-in/")
        problem = overflow(page)
        if problem:
            wide.append(f"sign-in at {width}: {problem}")
        page.screenshot(path=str(folder / "00-sign-in.png"), full_page=True)
        page.fill("#id_username", "otto")
        page.fill("#id_password", PASSWORD)
        page.click("main button.primary")
        page.wait_for_url(lambda url: "/accounts/sign-in/" not in url)
        for number, (name, path) in enumerate(pages(jobs), start=1):
            page.goto(live_server.url + path)
            page.wait_for_load_state("networkidle")
            problem = overflow(page)
            if problem:
                wide.append(f"{name} at {width}: {problem}")
            page.screenshot(path=str(folder / f"{number:02d}-{name}.png"), full_page=True)
        # The header's links: in a row on a laptop, behind "Menu" (a <details>, no script) on a phone.
        page.goto(live_server.url + reverse("readiness", kwargs={"host": "duo"}))
        row, menu = page.locator("nav.main-nav"), page.locator("details.nav-menu")
        assert (row.is_visible(), menu.is_visible()) == ((False, True) if width < 760 else (True, False)), width
        if menu.is_visible():
            menu.locator("summary").click()
            assert page.locator(".nav-menu-panel nav a").count() == 9
            assert page.locator(".nav-menu-panel a[aria-current=page]").inner_text() == "Readiness"
            problem = overflow(page)
            if problem:
                wide.append(f"menu at {width}: {problem}")
            page.screenshot(path=str(folder / "99-menu-open.png"), full_page=True)
        page.close()
    assert wide == [], "\n".join(wide)


def signed_in_page(browser, live_server, username: str, **options):
    page = browser.new_context(viewport={"width": 1366, "height": 900}, **options).new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/accounts/sign-in/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("main button.primary")
    page.wait_for_url(lambda url: "/accounts/sign-in/" not in url)
    return page


def test_the_vm_config_reads_without_sideways_scrolling_and_shows_only_the_targets_options(duo, live_server, browser):
    make_user("vera", "viewer")
    page = signed_in_page(browser, live_server, "vera")
    vmconfig = reverse("vmconfig", kwargs={"host": "duo"})
    for target in ("qemu", "libvirt", "proxmox", "vmware", "hyperv"):
        page.goto(f"{live_server.url}{vmconfig}?devices={DUO_GPU}&target={target}&name=gaming&firmware=ovmf"
                  "&machine=q35&memory_mib=16384&vcpus=8")  # fmt: skip
        text = page.locator("#config-text")
        sideways = text.evaluate("element => element.scrollWidth - element.clientWidth")
        assert sideways <= 0, f"{target}: the text scrolls {sideways} px sideways"
        visible = {name: page.locator(f"#id_{name}").is_visible() for name in ("hv_vendor_id", "hide_kvm", "machine")}
        assert visible == {
            "hv_vendor_id": target in ("qemu", "libvirt", "proxmox"),
            "hide_kvm": target != "hyperv",
            "machine": target in ("qemu", "libvirt", "proxmox"),
        }, target
    # Choosing another hypervisor shows its options at once, with no script of ours.
    page.select_option("#id_target", "qemu")
    assert page.locator("#id_hv_vendor_id").is_visible()
    page.close()


def test_a_fixs_copy_button_copies_the_command_alone(duo, live_server, browser):
    make_user("vera", "viewer")
    page = signed_in_page(browser, live_server, "vera", permissions=["clipboard-read", "clipboard-write"])
    page.goto(live_server.url + reverse("readiness", kwargs={"host": "duo"}))
    modules = page.locator("#check-vfio_modules")
    modules.locator("button.copy").first.click()
    expect_text(modules.locator("button.copy").first, "Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "modprobe -a vfio vfio_iommu_type1 vfio_pci"
    modules.locator(".fix-lines button.copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == "vfio\nvfio_iommu_type1\nvfio_pci"


def test_check_again_stays_on_the_readiness_page_and_shows_the_new_result(duo, live_server, browser, test_broker):
    otto = make_user("otto", OPERATOR)
    page = signed_in_page(browser, live_server, "otto")
    readiness = live_server.url + reverse("readiness", kwargs={"host": "duo"})
    page.goto(readiness)
    page.click("text=Check again")
    expect_text(page.locator(".scan-live"), "Checking duo again")
    job = Job.objects.get(action="scan")
    assert job.user == otto
    Job.objects.filter(pk=job.pk).update(state=State.RUNNING)  # as the worker marks it, then runs it
    execute(Job.objects.get(pk=job.pk), KernelDouble(duo.root))
    expect_text(page.locator(".message-success"), "Checked again: Scan the host done.")
    assert page.url == f"{readiness}?scan={job.pk}"
    assert page.locator(".scan-live").count() == 0 and page.locator("li.check").count() == 11


def test_without_javascript_copy_buttons_are_hidden_and_a_job_page_follows_its_job(duo, live_server, browser):
    otto = make_user("otto", OPERATOR)
    job = Job.objects.create(host=duo, user=otto, actor="otto", action="scan", state=State.QUEUED)
    page = signed_in_page(browser, live_server, "otto", java_script_enabled=False)
    page.goto(live_server.url + reverse("readiness", kwargs={"host": "duo"}))
    assert page.locator("button.copy").count() > 0
    assert [button.is_visible() for button in page.locator("button.copy").all()] == [False] * page.locator(
        "button.copy"
    ).count()
    page.goto(live_server.url + reverse("job", kwargs={"pk": job.pk}))
    expect_text(page.locator(".job-state"), "Queued")
    Job.objects.filter(pk=job.pk).update(state=State.SUCCEEDED, message="Scan the host done.")
    expect_text(page.locator(".job-state"), "Succeeded")  # the page reloaded itself: no script polls here
    assert page.locator("meta[http-equiv=refresh]").count() == 0


def expect_text(locator, text: str) -> None:
    from playwright.sync_api import expect

    expect(locator).to_contain_text(text)
