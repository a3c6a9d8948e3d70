"""The topology picture in Debian's chromium: nothing cut, nothing overlapping, on real machines
and at 1,024 functions, with a screenshot of each (as printed: the whole picture) in
test-artifacts/screenshots/topology-*.png to look at."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.synthetic import build_synthetic_host
from passthrough.hosttrees import realworld
from passthrough.hosttrees.spec import HostSpec
from tests.browser_support import chromium, requires_chromium
from tests.web_support import PASSWORD, make_user, snapshot_host

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    requires_chromium,
]

# Every drawn text against the box it belongs in, and every text against the picture's edge.
MEASURE = """() => {
  const svg = document.querySelector('svg.topology');
  const width = svg.viewBox.baseVal.width;
  const bad = [];
  const right = (element) => { const box = element.getBBox(); return box.x + box.width; };
  for (const row of svg.querySelectorAll('g.row')) {
    const box = row.querySelector('rect.box');
    for (const text of row.querySelectorAll('text.label, text[aria-label]')) {
      if (right(text) > right(box) - 1) bad.push('cut: ' + text.textContent);
    }
    for (const shape of row.querySelectorAll('rect.pill, rect.badge')) {
      const text = shape.nextElementSibling;
      if (right(text) > right(shape) + 0.5) bad.push('pill: ' + text.textContent);
      if (shape.classList.contains('pill') && shape.getBBox().x < right(box)) bad.push('overlap: ' + text.textContent);
    }
  }
  for (const text of svg.querySelectorAll('text')) {
    if (right(text) > width) bad.push('edge: ' + text.textContent);
  }
  return {bad, rows: svg.querySelectorAll('g.row').length, width, height: svg.viewBox.baseVal.height};
}"""


def _busy_synthetic() -> HostSpec:
    """The benchmark's 1,024-function host, its first GPU on vfio-pci and idling at 2.5 GT/s."""
    spec = build_synthetic_host(1024)
    gpu = next(function for function in spec.functions if function.class_code == "030000")
    for function in spec.functions:
        if function.address.rsplit(".", 1)[0] == gpu.address.rsplit(".", 1)[0]:
            function.driver = "vfio-pci"
    gpu.link = ("2.5 GT/s PCIe", 16, "16.0 GT/s PCIe", 16)
    return spec


HOSTS = {
    "duo": realworld.asokolsky_duo,  # Intel Z370: GPU on the CPU's port, the rest on the PCH
    "city17": realworld.ashtonian_city17,  # Alder Lake: an RX 560 on vfio-pci, PCH ports at 00:1a-00:1d
    "b550": realworld.mapmanagement_b550,  # AMD B550: the host's RX 550 behind the chipset
    "synthetic-1024": _busy_synthetic,
}


@pytest.fixture
def browser_page(monkeypatch):
    with chromium(monkeypatch) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page


def test_the_picture_fits_its_words_on_real_machines_and_at_1024_functions(live_server, tmp_path, browser_page):
    from playwright.sync_api import expect

    for name, spec in HOSTS.items():
        snapshot_host(name, spec(), tmp_path / name)
    make_user("vera", None)
    page, url = browser_page, live_server.url
    page.goto(url + "/hosts/duo/topology/")
    page.fill("#id_username", "vera")
    page.fill("#id_password", PASSWORD)
    page.click("main button.primary")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name in HOSTS:
        page.emulate_media(media="screen")
        page.goto(f"{url}/hosts/{name}/topology/")
        expect(page.locator("svg.topology")).to_be_visible()
        measured = page.evaluate(MEASURE)
        assert measured["bad"] == [], name
        assert measured["rows"] > 5
        # As printed: no scroll box, the whole picture on the page.
        page.emulate_media(media="print")
        page.screenshot(path=str(SCREENSHOTS / f"topology-{name}.png"), full_page=True)
        scrolls = page.evaluate(
            "() => { const f = document.querySelector('.topology-frame');"
            " return [f.scrollWidth - f.clientWidth, f.scrollHeight - f.clientHeight]; }"
        )
        assert scrolls == [0, 0], name
    assert measured["height"] > 10_000  # the 1,024-function host: tall, one row per node, still whole
