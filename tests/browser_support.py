"""Debian's chromium driven by Playwright, for the tests that look at pages as a person would.

Never `playwright install`: it downloads a browser of its own, which this project does not
use (and cannot fetch here). scripts/test installs Debian's chromium.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

requires_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM} (scripts/test installs it)"
)


@contextmanager
def chromium(monkeypatch: Any) -> Iterator[Any]:
    """A headless chromium for one test; closed at the end, whatever happened."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")  # Playwright's loop runs in the test's thread
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
