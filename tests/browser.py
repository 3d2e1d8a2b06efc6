"""Headless Chromium for the browser tests, shared by every test that drives a page.

The browser is the system's (Debian's ``chromium`` package at /usr/bin/chromium; ``.ci/run``
installs it as root): Playwright drives it through ``executable_path`` and never downloads one
(no ``playwright install``; browser downloads are not reachable from CI). Where it is missing
the tests are skipped, saying so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless, no sandbox (CI runs as root, where Chromium's sandbox refuses to start), and nothing
# that would reach the network by itself (updates, sync, QUIC probes).
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
ARTIFACTS_ENV = "SYNCD_ARTIFACTS_DIR"


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: install Debian's `chromium` package "
                    "(as root: apt-get install -y chromium; .ci/run does) to run browser tests")


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, closed afterwards; skips the test where there is none."""
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def artifacts_dir(fallback: Path) -> Path:
    """Where screenshots go: ``$SYNCD_ARTIFACTS_DIR`` when set (CI keeps it), else ``fallback``
    (the test's tmp_path)."""
    configured = os.environ.get(ARTIFACTS_ENV)
    directory = Path(configured) if configured else fallback
    directory.mkdir(parents=True, exist_ok=True)
    return directory
