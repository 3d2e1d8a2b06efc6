"""Partial replication, the basics end to end through the native API (the thorough proofs are in
the other test_partial_* modules)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import websockets

from syncd import checkpoint as checkpoints
from tests.conftest import register
from tests.support import SyncdProcess

SCHEMA: dict[str, Any] = {
    "version": 0,
    "primaryKey": "id",
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 100},
        "listId": {"type": "string"},
        "title": {"type": "string", "minLength": 1},
        "n": {"type": "integer", "minimum": 1},
    },
    "required": ["id", "listId", "title", "n"],
    "additionalProperties": False,
}
ACCESS: dict[str, Any] = {"filters": {"listId": {}}}


def _pull(http: httpx.Client, name: str, flt: Any, cp: Any, limit: int = 100) -> dict[str, Any]:
    query = f"limit={limit}&filter={quote(orjson.dumps(flt).decode(), safe='')}"
    if cp is not None:
        query += "&checkpoint=" + checkpoints.to_query_value(cp)
    response = http.get(f"/api/v1/sync/{name}?{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _push(http: httpx.Client, name: str, rows: list[dict[str, Any]], flt: Any = None) -> Any:
    url = f"/api/v1/sync/{name}"
    if flt is not None:
        url += f"?filter={quote(orjson.dumps(flt).decode(), safe='')}"
    response = http.post(url, json=rows)
    assert response.status_code == 200, response.text
    return response.json()


def test_move_out_is_a_placeholder_deletion_and_move_in_arrives(
    http: httpx.Client, database_url: str
) -> None:
    name = register(database_url, SCHEMA, access=ACCESS)
    docs = [{"id": f"d{i}", "listId": f"l{i % 3}", "title": "secret", "n": 5} for i in range(9)]
    assert _push(http, name, [{"newDocumentState": d} for d in docs]) == []
    page = _pull(http, name, {"listId": "l1"}, None)
    assert sorted(d["id"] for d in page["documents"]) == ["d1", "d4", "d7"]
    cp = page["checkpoint"]
    moved = {**docs[1], "listId": "l2", "title": "new secret"}
    assert _push(http, name, [{"assumedMasterState": {**docs[1], "_deleted": False},
                               "newDocumentState": moved}]) == []
    came_in = {**docs[2], "listId": "l1"}
    assert _push(http, name, [{"assumedMasterState": {**docs[2], "_deleted": False},
                               "newDocumentState": came_in}]) == []
    page = _pull(http, name, {"listId": "l1"}, cp)
    assert page["documents"] == [
        {"id": "d1", "listId": "l1", "title": "_", "n": 1, "_deleted": True},
        {**came_in, "_deleted": False},
    ]
    assert _pull(http, name, {"listId": "l1"}, page["checkpoint"])["documents"] == []
    # A fresh replication never hears of d1.
    fresh = _pull(http, name, {"listId": "l1"}, None)
    assert sorted(d["id"] for d in fresh["documents"]) == ["d2", "d4", "d7"]


def test_a_bad_filter_is_400_naming_the_declared_fields(
    http: httpx.Client, database_url: str
) -> None:
    name = register(database_url, SCHEMA, access=ACCESS)
    response = http.get(f"/api/v1/sync/{name}?filter=" + quote('{"title": "x"}'))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_filter"
    assert "listId" in response.json()["error"]["message"]


@pytest.fixture()
def listed(database_url: str) -> str:
    return register(database_url, SCHEMA, access=ACCESS)


async def test_a_filtered_stream_gets_move_ins_and_move_outs_and_its_echo_first(
    syncd: SyncdProcess, listed: str
) -> None:
    name = listed
    flt = quote(orjson.dumps({"listId": "l1"}).decode(), safe="")
    url = syncd.url.replace("http://", "ws://") + f"/api/v1/sync/{name}/stream?filter={flt}"
    doc = {"id": "a", "listId": "l1", "title": "x", "n": 2}
    async with websockets.connect(url) as ws, httpx.AsyncClient(base_url=syncd.url) as http:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
        other = {"id": "b", "listId": "l2", "title": "y", "n": 2}
        answer = await http.post(f"/api/v1/sync/{name}?filter={flt}",
                                 json=[{"newDocumentState": other}, {"newDocumentState": doc}])
        assert answer.json() == []
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["documents"] == [{**doc, "_deleted": False}]  # b is not for this stream
        assert set(frame["checkpoint"]) == {"id", "lwt"} and "~" in frame["checkpoint"]["id"]
        moved = {**doc, "listId": "l2", "title": "secret"}
        await http.post(f"/api/v1/sync/{name}", json=[
            {"assumedMasterState": {**doc, "_deleted": False}, "newDocumentState": moved}])
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["documents"] == [
            {"id": "a", "listId": "l1", "title": "_", "n": 1, "_deleted": True}]
        back = {**other, "listId": "l1"}
        # The echo of a push is on the pusher's stream before the push's answer (issue #10).
        answer = await http.post(f"/api/v1/sync/{name}?filter={flt}", json=[
            {"assumedMasterState": {**other, "_deleted": False}, "newDocumentState": back}])
        assert answer.json() == []
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 0.01))
        assert frame["documents"] == [{**back, "_deleted": False}]


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


async def test_streams_of_one_filter_share_one_feed_and_one_read_per_change(
    syncd: SyncdProcess, listed: str
) -> None:
    name = listed
    base = syncd.url.replace("http://", "ws://") + f"/api/v1/sync/{name}/stream?filter="
    filters = [quote(orjson.dumps({"listId": v}).decode(), safe="") for v in ("l1", "l2")]
    sockets = [await websockets.connect(base + filters[i % 2]) for i in range(10)]
    try:
        for ws in sockets:
            assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
        async with httpx.AsyncClient(base_url=syncd.url) as http:
            before = (await http.get("/metrics")).text
            feeds = _metric(before, 'syncd_stream_feeds{filtered="yes"}')
            assert feeds >= 2  # other tests' streams may be open on this node too
            reads = _metric(before, 'syncd_stream_feed_reads_total{filtered="yes"}')
            doc = {"id": "s1", "listId": "l1", "title": "x", "n": 1}
            assert (await http.post(f"/api/v1/sync/{name}",
                                    json=[{"newDocumentState": doc}])).json() == []
            for ws in sockets[::2]:
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert frame["documents"] == [{**doc, "_deleted": False}]
            after = (await http.get("/metrics")).text
        # One read per feed of the partition (l1 and l2), not one per stream (ten).
        assert _metric(after, 'syncd_stream_feed_reads_total{filtered="yes"}') - reads <= 4
        for ws in sockets[1::2]:  # the l2 streams got nothing
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.2)
    finally:
        for ws in sockets:
            await ws.close()


def test_rxdb_server_takes_the_filter_in_the_url_path(http: httpx.Client, listed: str) -> None:
    docs = [{"id": f"r{i}", "listId": f"l{i % 2}", "title": "t", "n": 1} for i in range(4)]
    assert _push(http, listed, [{"newDocumentState": d} for d in docs]) == []
    flt = quote(orjson.dumps({"listId": "l1"}).decode(), safe="")
    page = http.get(f"/rxdb/{listed}/0/filter/{flt}/pull?lwt=0&id=&limit=10")
    assert page.status_code == 200, page.text
    assert sorted(d["id"] for d in page.json()["documents"]) == ["r1", "r3"]
    # A value with a slash still routes (the filter is everything between /filter/ and /pull).
    slashed = quote(orjson.dumps({"listId": "a/pull"}).decode(), safe="")
    assert http.get(f"/rxdb/{listed}/0/filter/{slashed}/pull?lwt=0&id=").json()[
        "documents"] == []
    # A broken filter would be retried forever as a 400: the client gets 403 (forbidden$).
    bad = quote('{"title": "t"}', safe="")
    refused = http.get(f"/rxdb/{listed}/0/filter/{bad}/pull?lwt=0&id=")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "invalid_filter"
