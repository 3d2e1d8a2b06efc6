"""Partial replication through RxDB's own protocols: rxdb-server's ``replicateServer`` carries the
filter in the url's path (…/filter/<encodeURIComponent(JSON)>/pull, /push, /pullStream),
``replicateWithWebsocketServer`` in the socket url's query (/rxdb/ws?filter=…)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import websockets

from tests.partial import (
    NEUTRAL,
    PLAIN_RULE,
    Doc,
    Filter,
    bearer,
    item,
    register_filtered,
    serve,
    token,
)
from tests.support import SyncdProcess

# A value with what a path would trip over, encoded as encodeURIComponent does.
AWKWARD = "a/b c?d#e%f"
FILTER: Filter = {"listId": {"$in": [AWKWARD, "l1"]}}


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[SyncdProcess]:
    yield from serve(database_url)


@pytest.fixture()
async def http(server: SyncdProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                 headers=bearer(token("alice"))) as client:
        yield client


@pytest.fixture()
def plain(database_url: str) -> str:
    return register_filtered(database_url, PLAIN_RULE)


def filtered_url(collection: str, selector: Filter) -> str:
    return f"/rxdb/{collection}/0/filter/{quote(orjson.dumps(selector).decode(), safe='')}"


async def rxdb_pull(http: httpx.AsyncClient, url: str, checkpoint: Doc | None,
                    limit: int = 10) -> Doc:
    """The pull as rxdb-server 15.22.0 builds it: lwt and id unencoded."""
    lwt = checkpoint["lwt"] if checkpoint else 0
    token_ = checkpoint["id"] if checkpoint else ""
    response = await http.get(f"{url}/pull?lwt={lwt}&id={token_}&limit={limit}")
    assert response.status_code == 200, response.text
    body: Doc = response.json()
    return body


async def test_rxdb_server_pull_and_push_through_a_filter_in_the_path(
    http: httpx.AsyncClient, plain: str
) -> None:
    url = filtered_url(plain, FILTER)
    a, b = item("a", AWKWARD, "north", "a1"), item("b", "l2", "north", "b1")
    c = item("c", "l1", "north", "c1")
    response = await http.post(f"{url}/push", json=[{"newDocumentState": d} for d in (a, b, c)])
    assert response.status_code == 200 and response.json() == [], response.text
    page = await rxdb_pull(http, url, None)
    assert page["documents"] == [a, c]
    # The checkpoint goes back unencoded, as that client sends it.
    checkpoint = page["checkpoint"]
    assert all(ch.isalnum() or ch in "._~-" for ch in checkpoint["id"]), checkpoint

    # A move-out arrives as a placeholder; the stored version's content does not.
    moved = {**a, "listId": "l3", "title": "a2", "secret": "s"}
    response = await http.post("/api/v1/sync/" + plain,
                               json=[{"newDocumentState": moved, "assumedMasterState": a}])
    assert response.json() == [], response.text
    page = await rxdb_pull(http, url, checkpoint)
    assert page["documents"] == [{**NEUTRAL, "id": "a", "listId": AWKWARD, "_deleted": True}]
    # An empty page echoes the checkpoint it was asked for.
    again = await rxdb_pull(http, url, page["checkpoint"])
    assert again == {"documents": [], "checkpoint": page["checkpoint"]}

    # A conflict on a document this filter cannot see: its placeholder, never its content.
    response = await http.post(f"{url}/push", json=[{
        "newDocumentState": {**a, "title": "my edit"}, "assumedMasterState": a}])
    assert response.status_code == 200, response.text
    [conflict] = response.json()
    assert conflict["_deleted"] is True and conflict["title"] == ""
    assert "l3" not in orjson.dumps(conflict).decode() and "secret" not in conflict


async def test_rxdb_server_pull_stream_through_a_filter_sends_only_its_selection(
    http: httpx.AsyncClient, plain: str
) -> None:
    url = filtered_url(plain, FILTER)
    events: list[Doc] = []
    opened = asyncio.Event()

    async def listen() -> None:
        async with http.stream("GET", f"{url}/pullStream",
                               headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            opened.set()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(orjson.loads(line[len("data: "):]))

    task = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(opened.wait(), 10)
        await asyncio.sleep(0.2)
        out = item("out", "l2", "north", "out", secret="never")
        inside = item("in", "l1", "north", "in")
        for doc in (out, inside):
            response = await http.post(f"/api/v1/sync/{plain}", json=[{"newDocumentState": doc}])
            assert response.json() == []
        moved = {**inside, "listId": "l2", "title": "moved"}
        response = await http.post(f"/api/v1/sync/{plain}",
                                   json=[{"newDocumentState": moved,
                                          "assumedMasterState": inside}])
        assert response.json() == []
        for _ in range(100):
            if len([d for e in events for d in e["documents"]]) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # anything else that would come
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    sent = [d for e in events for d in e["documents"]]
    assert sent == [inside, {**NEUTRAL, "id": "in", "listId": "l1", "_deleted": True}], sent


async def _call(ws: websockets.ClientConnection, collection: str, method: str,
                *params: Any) -> Any:
    """One request of RxDB's websocket envelope; stream frames in between are skipped."""
    request_id = f"db|{uuid.uuid4().hex[:8]}"
    await ws.send(orjson.dumps({"id": request_id, "collection": collection, "method": method,
                                "params": list(params)}).decode())
    while True:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if message.get("id") == request_id:
            assert "error" not in message, message
            return message["result"]


async def test_rxdb_ws_filter_in_the_socket_url_applies_to_pulls_and_pushes(
    server: SyncdProcess, http: httpx.AsyncClient, plain: str
) -> None:
    a, b = item("a", "l1", "north", "a1"), item("b", "l2", "north", "b1", secret="b")
    response = await http.post(f"/api/v1/sync/{plain}",
                               json=[{"newDocumentState": d} for d in (a, b)])
    assert response.json() == []
    selector = quote(orjson.dumps({"listId": "l1"}).decode(), safe="")
    url = server.url.replace("http://", "ws://") + (
        f"/rxdb/ws?filter={selector}&access_token={token('alice')}")
    async with websockets.connect(url) as ws:
        page = await _call(ws, plain, "masterChangesSince", None, 10)
        assert page["documents"] == [a]
        moved = {**a, "listId": "l2", "title": "a2"}
        response = await http.post(f"/api/v1/sync/{plain}",
                                   json=[{"newDocumentState": moved, "assumedMasterState": a}])
        assert response.json() == []
        page = await _call(ws, plain, "masterChangesSince", page["checkpoint"], 10)
        assert page["documents"] == [{**NEUTRAL, "id": "a", "listId": "l1", "_deleted": True}]
        # A conflict on b, which this filter never showed: a placeholder.
        [conflict] = await _call(ws, plain, "masterWrite", [
            {"newDocumentState": {**b, "title": "mine"}, "assumedMasterState": {**b, "n": 0}}])
        assert conflict["_deleted"] is True and "secret" not in conflict
        assert conflict["title"] == "" and conflict["listId"] in ("", "l2")
