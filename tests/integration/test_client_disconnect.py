"""A client that goes away in the middle of sending a push is not a server error: no 500, no
traceback in the log (it is logged once, at debug level)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support import SyncdProcess


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[SyncdProcess]:
    """A server of its own, so that its log is this module's."""
    process = SyncdProcess(database_url)
    yield process
    process.stop()


async def push_then_vanish(server: SyncdProcess, path: str) -> None:
    """Announce a 100 kB push, send 20 bytes of it, and close the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n".encode() + b'[{"newDocumentState": {"id"'
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the server is reading the body
    writer.close()
    await writer.wait_closed()
    del reader


@pytest.mark.parametrize("way", ["native", "rxdb-server"])
async def test_a_push_cut_off_by_the_client_logs_no_error(
    server: SyncdProcess, collection: str, way: str
) -> None:
    path = (f"/api/v1/sync/{collection}" if way == "native"
            else f"/rxdb/{collection}/0/push")
    for _ in range(3):
        await push_then_vanish(server, path)
    await asyncio.sleep(0.5)  # whatever the server logs about it is written by now
    log = server.log()
    assert "Traceback" not in log and "ClientDisconnect" not in log, log
    assert "unhandled error" not in log and "Exception in ASGI application" not in log, log
    # ... and it keeps serving.
    pulled = httpx.get(f"{server.url}/api/v1/sync/{collection}", timeout=30)
    assert pulled.status_code == 200 and pulled.json()["documents"] == []
