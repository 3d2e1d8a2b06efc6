"""A client that states its RxDB schema version gets the outdated answer of its way in when the
collection is at a newer version: 426 ``outdated_schema`` on the native API (a stream closes with
4426), failure answers with code ``outdated_schema`` on RxDB's websocket protocol. Clients that
state the collection's version (or a newer one, or none) are served as before."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import orjson
import pytest
import websockets

from tests.conftest import TODO_SCHEMA, register
from tests.support import SyncdProcess

pytestmark = pytest.mark.postgres

Doc = dict[str, Any]
V1_SCHEMA = {**TODO_SCHEMA, "version": 1}
HEADER = "X-Syncd-Schema-Version"


def _doc(doc_id: str) -> Doc:
    return {"id": doc_id, "title": "t", "_deleted": False}


@pytest.fixture()
def v1_collection(database_url: str) -> str:
    return register(database_url, V1_SCHEMA)


def _assert_outdated(response: httpx.Response, name: str) -> None:
    assert response.status_code == 426, response.text
    error = response.json()["error"]
    assert error["code"] == "outdated_schema"
    assert error["message"].startswith(
        f"schema version 0 is outdated: collection {name!r} is at version 1. Update the app"
    )


def test_native_pull_and_push_of_an_older_version_answer_426(
    http: httpx.Client, v1_collection: str
) -> None:
    url = f"/api/v1/sync/{v1_collection}"
    _assert_outdated(http.get(url, headers={HEADER: "0"}), v1_collection)
    _assert_outdated(http.get(url, params={"schemaVersion": "0"}), v1_collection)
    old_push = http.post(url, headers={HEADER: "0"}, json=[{"newDocumentState": _doc("old")}])
    _assert_outdated(old_push, v1_collection)
    # The collection's own version, a newer one and none at all are served.
    for headers in ({HEADER: "1"}, {HEADER: "2"}, {}):
        pushed = http.post(url, headers=headers, json=[{"newDocumentState": _doc("new")}])
        assert pushed.status_code == 200, pushed.text
        pulled = http.get(url, headers=headers)
        assert pulled.status_code == 200, pulled.text
        # nothing of the outdated push was written
        assert [d["id"] for d in pulled.json()["documents"]] == ["new"]


@pytest.mark.parametrize(
    ("headers", "query", "problem"),
    [({HEADER: "one"}, {}, "non-negative integer"), ({}, {"schemaVersion": "-1"}, "got '-1'"),
     ({HEADER: "1"}, {"schemaVersion": "0"}, "disagree")],
)
def test_a_schema_version_that_is_not_one_answers_400(
    http: httpx.Client, v1_collection: str, headers: dict[str, str], query: dict[str, str],
    problem: str,
) -> None:
    response = http.get(f"/api/v1/sync/{v1_collection}", headers=headers, params=query)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_schema_version"
    assert problem in error["message"]


def _stream_url(server: SyncdProcess, name: str, version: int) -> str:
    base = server.url.replace("http://", "ws://")
    return f"{base}/api/v1/sync/{name}/stream?schemaVersion={version}"


async def test_native_stream_of_an_older_version_closes_with_4426(
    syncd: SyncdProcess, v1_collection: str
) -> None:
    async with websockets.connect(_stream_url(syncd, v1_collection, 0)) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4426
    assert ws.close_reason is not None
    assert ws.close_reason.startswith("schema version 0 is outdated")
    async with websockets.connect(_stream_url(syncd, v1_collection, 1)) as ws:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'


async def _rxdb_ws_requests(server: SyncdProcess, name: str, query: str) -> list[Doc]:
    """A pull, a write and a stream subscription over /rxdb/ws; the answers to pull and write,
    and the first stream frame when one comes within a second."""
    url = server.url.replace("http://", "ws://") + "/rxdb/ws" + query
    async with websockets.connect(url) as ws:
        for request_id, method, params in (
            ("w", "masterWrite", [[{"newDocumentState": _doc(f"ws{query}")}]]),
            ("p", "masterChangesSince", [None, 10]),
            ("stream", "masterChangeStream$", []),
        ):
            await ws.send(orjson.dumps({"id": request_id, "collection": name,
                                        "method": method, "params": params}).decode())
        answers = [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
        with contextlib.suppress(TimeoutError):
            answers.append(orjson.loads(await asyncio.wait_for(ws.recv(), 1)))
        return answers


async def test_rxdb_websocket_of_an_older_version_gets_failure_answers(
    syncd: SyncdProcess, v1_collection: str
) -> None:
    write, pull, *stream = await _rxdb_ws_requests(syncd, v1_collection, "?schemaVersion=0")
    assert write["id"] == "w" and write["result"] is None
    assert pull["id"] == "p" and pull["result"] == {"documents": [], "checkpoint": None}
    for answer in (write, pull):
        assert answer["error"]["status"] == 426
        assert answer["error"]["code"] == "outdated_schema"
    assert stream == []  # no stream for an outdated client

    write, pull, *stream = await _rxdb_ws_requests(syncd, v1_collection, "?schemaVersion=1")
    assert write == {"id": "w", "collection": v1_collection, "result": []}
    assert [d["id"] for d in pull["result"]["documents"]] == ["ws?schemaVersion=1"]
    assert stream[0]["id"] == "stream"
