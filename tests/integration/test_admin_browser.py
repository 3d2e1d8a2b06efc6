"""The admin page in headless Chromium, against real nodes: refused without credentials, then
live with a service key — a collection's counts move after pushes, a second node appears and
disappears when stopped, the lag card turns to its warning colour. Writes a screenshot."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.sync_api import Page, expect
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from syncd.db.urls import asyncpg_dsn
from tests.adminworld import ENV, SERVICE_KEY, bearer
from tests.browser import artifacts_dir, chromium
from tests.conftest import TODO_SCHEMA, register
from tests.support import PostgresServer, SyncdProcess, run

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
# Set to copy the screenshot over docs/admin.png (the README's picture of the page).
UPDATE_DOCS_ENV = "UPDATE_DOCS_SCREENSHOTS"
LAG_WARNING_SECONDS = 1.0
# Heartbeats (0.5 s), the page's poll (2 s) and the collection-count cache (5 s), with room.
SHOWN_WITHIN_MS = 15_000


@pytest.fixture()
def admin_db(postgres: PostgresServer) -> Iterator[str]:
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


def push(node: SyncdProcess, collection: str, ids: range) -> None:
    rows = [{"newDocumentState": {"id": f"d{i}", "title": f"todo {i}", "_deleted": False}}
            for i in ids]
    answer = httpx.post(f"{node.url}/api/v1/sync/{collection}", json=rows,
                        headers=bearer(SERVICE_KEY), timeout=30)
    assert answer.status_code == 200 and answer.json() == [], answer.text


def keep_busy(nodes: list[SyncdProcess], collection: str, stop: threading.Event) -> None:
    """Pushes, pulls and now and then a conflict, on every node in turn, until stopped."""
    n = 1000
    while not stop.is_set():
        for node in nodes:
            push(node, collection, range(n, n + 20))
            httpx.get(f"{node.url}/api/v1/sync/{collection}", params={"limit": 50},
                      headers=bearer(SERVICE_KEY), timeout=30)
            n += 20
        stale = {"id": "d0", "title": "stale", "_deleted": False}
        httpx.post(f"{nodes[0].url}/api/v1/sync/{collection}", headers=bearer(SERVICE_KEY),
                   json=[{"assumedMasterState": stale, "newDocumentState": stale}], timeout=30)
        stop.wait(0.2)


def hold_an_xid(database_url: str, seconds: float) -> None:
    """An open transaction with an xid: it holds the pull horizon back (the page's lag)."""

    async def hold() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            async with conn.transaction():
                await conn.fetchval("SELECT pg_current_xact_id()")
                await asyncio.sleep(seconds)
        finally:
            await conn.close()

    run(hold())


def row(page: Page, collection: str, column: str) -> str:
    return page.locator(f'tr[data-collection="{collection}"] td.{column}').inner_text()


def test_the_admin_page_in_chromium(admin_db: str, tmp_path: Path) -> None:
    started = time.monotonic()
    env = {**ENV, "SYNCD_ADMIN_LAG_WARNING_SECONDS": str(LAG_WARNING_SECONDS)}
    collection = register(admin_db, TODO_SCHEMA, name="todos")
    with chromium() as browser:
        first = SyncdProcess(admin_db, env=env)
        try:
            shot = drive(browser.new_page(viewport={"width": 1280, "height": 900}),
                         admin_db, env, collection, first, tmp_path)
        finally:
            first.stop()
    print(f"admin browser test: {time.monotonic() - started:.1f} s, screenshot {shot}")


def drive(
    page: Page, admin_db: str, env: dict[str, str], collection: str, first: SyncdProcess,
    tmp_path: Path,
) -> Path:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Unauthenticated: the endpoint answers 401, and the page says so instead of data.
    assert httpx.get(f"{first.url}/admin/api/overview").status_code == 401
    page.goto(f"{first.url}/admin")
    expect(page.locator("body")).to_have_attribute("data-state", "refused")
    expect(page.locator("#refusal")).to_contain_text("401 missing_token")
    expect(page.locator("#dashboard")).to_be_hidden()

    # With the service key (typed into the page, kept in sessionStorage).
    page.fill("#token", SERVICE_KEY)
    page.click("#login-form button[type=submit]")
    expect(page.locator("body")).to_have_attribute("data-state", "live")
    documents = page.locator(f'tr[data-collection="{collection}"] td.documents')
    expect(documents).to_have_text("0")
    expect(page.locator(f'tr[data-collection="{collection}"] td.schema')).to_have_text("v0")

    # Pushes move the collection's counts and the node's counters.
    push(first, collection, range(0, 40))
    expect(documents).to_have_text("40", timeout=SHOWN_WITHIN_MS)
    nodes = page.locator("#nodes tbody tr[data-node]")
    expect(nodes).to_have_count(1)
    expect(nodes.locator("td.pushed")).to_have_text("40", timeout=SHOWN_WITHIN_MS)

    # A second node on the same database appears on the first node's page.
    second = SyncdProcess(admin_db, env=env)
    try:
        expect(nodes).to_have_count(2, timeout=SHOWN_WITHIN_MS)

        # Traffic on both nodes for the plots, and a long transaction for the lag warning.
        holder = threading.Thread(target=hold_an_xid, args=(admin_db, 8.0))
        stop = threading.Event()
        traffic = threading.Thread(target=keep_busy, args=([first, second], collection, stop))
        holder.start()
        traffic.start()
        stream_url = (second.url.replace("http://", "ws://")
                      + f"/api/v1/sync/{collection}/stream")
        offered = [Subprotocol("syncd.v1"), Subprotocol(f"bearer.{SERVICE_KEY}")]
        try:
            with connect(stream_url, subprotocols=offered):
                expect(page.locator("#k-subscribers")).to_have_text("1",
                                                                    timeout=SHOWN_WITHIN_MS)
                expect(page.locator("#lag-card")).to_have_class("card warning",
                                                                timeout=SHOWN_WITHIN_MS)
                page.wait_for_timeout(2500)  # a few points on the plots
                shot = artifacts_dir(tmp_path) / "admin.png"
                page.screenshot(path=str(shot), full_page=True)
                if os.environ.get(UPDATE_DOCS_ENV):
                    shutil.copy(shot, REPO / "docs" / "admin.png")
        finally:
            stop.set()
            traffic.join()
            holder.join()
    finally:
        # Stopped, the second node leaves every page.
        second.stop()
    expect(nodes).to_have_count(1, timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#lag-card")).to_have_class("card", timeout=SHOWN_WITHIN_MS)
    assert errors == []
    return shot
