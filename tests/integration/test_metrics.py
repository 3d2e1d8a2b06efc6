"""``GET /metrics`` against a real syncd: the horizon's age and the open streams."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import httpx
import websockets

from syncd.db.urls import asyncpg_dsn
from tests.support import SyncdProcess


def gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert found, f"{name} missing from:\n{text}"
    return float(found.group(1))


async def test_the_oldest_transaction_holding_an_xid_shows_its_age(
    syncd: SyncdProcess, database_url: str
) -> None:
    holder = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with holder.transaction():
            await holder.fetchval("SELECT pg_current_xact_id()")  # takes an xid: holds pulls
            await asyncio.sleep(2.5)
            held = httpx.get(f"{syncd.url}/metrics")
        released = httpx.get(f"{syncd.url}/metrics")
    finally:
        await holder.close()
    assert held.status_code == 200 and held.headers["content-type"].startswith("text/plain")
    assert gauge(held.text, "syncd_database_up") == 1
    assert gauge(held.text, "syncd_oldest_transaction_age_seconds") >= 2.5
    assert gauge(released.text, "syncd_oldest_transaction_age_seconds") < 2.0


async def test_open_streams_are_counted(syncd: SyncdProcess, collection: str) -> None:
    before = gauge(httpx.get(f"{syncd.url}/metrics").text, "syncd_stream_subscribers")
    url = syncd.url.replace("http://", "ws://") + f"/api/v1/sync/{collection}/stream"
    async with websockets.connect(url) as first, websockets.connect(url) as second:
        for ws in (first, second):
            assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
        during = gauge(httpx.get(f"{syncd.url}/metrics").text, "syncd_stream_subscribers")
    assert during == before + 2
