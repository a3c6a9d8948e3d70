"""Step 5 in a real browser: give the GPU to a libvirt domain of a real libvirtd, see it there, undo.

Debian's chromium driven by Playwright, a live server, a real worker on the asokolsky "duo"
machine's tree (GT 1030 with its HDMI audio, behind the kernel double) reading VMs from a
real libvirtd (tests/libvirtd_support.py starts one when none answers). The domain is the
test's own, defined here and undefined at the end. libvirt accepts any host address into
a saved configuration, so the duo's GPU needs no real card here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from passthrough.hosttrees import realworld
from passthrough.hosttrees.tree import write_tree
from tests.browser_support import chromium, requires_chromium
from tests.libvirtd_support import connection_fixture, domains_fixture, libvirt_uri_fixture  # noqa: F401
from tests.web_support import DUO_GPU, DUO_GPU_AUDIO, PASSWORD, make_user
from tests.worker_support import requires_redis

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
JOB_TIMEOUT_MS = 60_000

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.slow, requires_redis, requires_chromium]


def inactive_xml(domain) -> str:
    import libvirt

    return domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def hostdev_sources(xml: str) -> list[str]:
    import xml.etree.ElementTree as ET

    found = []
    for source in ET.fromstring(xml).findall("./devices/hostdev/source/address"):
        found.append(
            "{:04x}:{:02x}:{:02x}.{:x}".format(
                *(int(source.get(key), 0) for key in ("domain", "bus", "slot", "function"))
            )
        )
    return found


def test_step_5_gives_the_gpu_to_a_libvirt_domain_shows_the_diff_first_and_undo_takes_it_back(
    start_worker, live_server, tmp_path, monkeypatch, libvirt_uri, domains
):
    from playwright.sync_api import expect

    from webui.accounts.roles import OPERATOR
    from webui.hosts.models import Host
    from webui.wizard.models import WizardState

    domain = domains.define("step5")
    name = domain.name()
    original = inactive_xml(domain)
    root = Path(write_tree(realworld.asokolsky_duo(), tmp_path / "duo"))
    start_worker(root, "duo", PASSTHROUGH_LIBVIRT_URI=libvirt_uri)
    user = make_user("vera", OPERATOR)
    # Steps 1 to 4 are the other browser test's; this one starts at step 5 with the GPU picked.
    WizardState.objects.create(user=user, host=Host.objects.get(name="duo"), device=DUO_GPU, step=5, reached=5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with chromium(monkeypatch) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(JOB_TIMEOUT_MS)
        url = live_server.url
        page.goto(url + "/hosts/duo/wizard/5/")
        page.fill("#id_username", "vera")
        page.fill("#id_password", PASSWORD)
        page.click("main button.primary")
        expect(page.locator(".step-of")).to_have_text("Step 5 of 5")
        expect(page.locator("h1")).to_contain_text("Give it to a VM")

        # The worker found the domain; picking it shows the change before anything runs.
        row = page.locator("table.vms tr", has_text=name)
        expect(row).to_contain_text("shut off")
        row.locator("input[type=radio]").check()
        diff = page.locator("#vm-diff")
        expect(diff).to_contain_text("uses the free root port pci.3")  # the new domain has one
        expect(diff).to_contain_text("<hostdev mode='subsystem' type='pci' managed='yes'>")
        expect(diff).to_contain_text("multifunction='on'")
        expect(page.locator("#give-vm")).to_contain_text("2 functions: 01:00.0, 01:00.1")
        page.screenshot(path=str(SCREENSHOTS / "vm-1-diff.png"), full_page=True)
        assert inactive_xml(domain) == original  # looking changed nothing

        # The GPU's options redraw the diff: a ROM file adds the rom element, and clearing it takes it away.
        expect(page.locator("#id_primary_gpu")).to_be_visible()
        page.fill("#id_rom_file", "/usr/share/vgabios/gt1030.rom")
        page.locator("#id_rom_file").press("Tab")
        expect(diff).to_contain_text("<rom file='/usr/share/vgabios/gt1030.rom'/>")
        page.screenshot(path=str(SCREENSHOTS / "vm-1-rom.png"), full_page=True)
        page.fill("#id_rom_file", "")
        page.locator("#id_rom_file").press("Tab")
        expect(diff).not_to_contain_text("<rom file=")

        clicked = time.monotonic()
        page.click(f"button:has-text('Attach to {name}')")
        expect(page.locator(".job-live")).to_contain_text("Succeeded")
        expect(row).to_contain_text("01:00.0")
        shown = time.monotonic() - clicked
        print(f"\nAttach to the device listed in the VM's row: {shown:.2f} s")
        page.screenshot(path=str(SCREENSHOTS / "vm-2-attached.png"), full_page=True)
        assert hostdev_sources(inactive_xml(domain)) == [DUO_GPU, DUO_GPU_AUDIO]

        # Undo puts the exact configuration back.
        page.click("button:has-text('Undo job')")
        expect(page.locator(".job-state")).to_contain_text("Succeeded")
        assert inactive_xml(domain) == original

        # Attach again, then Detach from the VM's row.
        page.goto(url + f"/hosts/duo/wizard/5/?vm=libvirt:{name}")
        page.click(f"button:has-text('Attach to {name}')")
        expect(page.locator(".job-live")).to_contain_text("Succeeded")
        expect(row.locator(".held")).to_have_count(2)
        # The attach job's box says "Succeeded" too: wait for the detach job's own box, not that one.
        attach_box = page.locator(".job-live").get_attribute("id")
        row.locator(".held", has_text="01:00.0").locator("button:has-text('Detach')").click()
        detach_box = page.locator(f".job-live:not(#{attach_box})")
        expect(detach_box).to_contain_text("Succeeded", timeout=JOB_TIMEOUT_MS)
        # The step reloads when its job ends; the row then comes from the job's closing snapshot.
        expect(row).to_contain_text("none", timeout=JOB_TIMEOUT_MS)
        page.screenshot(path=str(SCREENSHOTS / "vm-3-detached.png"), full_page=True)
        assert hostdev_sources(inactive_xml(domain)) == []
