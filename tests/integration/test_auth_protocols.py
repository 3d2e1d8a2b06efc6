"""Every authentication mode admits the right caller, and only it, on all three ways in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets

from syncd.auth.apikeys import key_hash
from tests.authworld import AUDIENCE, ISSUER, Issuer, LocalHttp
from tests.conftest import TODO_SCHEMA, register
from tests.support import SyncdProcess

SERVICE_KEY = "sk_protocol_matrix_key_0123456789"
SESSION = "session-of-alice"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    world = Issuer()
    yield world
    world.close()


@pytest.fixture(scope="module")
def api() -> Iterator[LocalHttp]:
    def answer(headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if headers.get("authorization") == f"Bearer {SESSION}":
            return 200, {"Content-Type": "application/json"}, b'{"sub": "alice"}'
        return 401, {}, b""

    server = LocalHttp(answer)
    yield server
    server.close()


MODES = ["jwt", "forward", "api-key"]


@pytest.fixture(scope="module", params=MODES)
def mode_server(
    request: pytest.FixtureRequest, database_url: str, issuer: Issuer, api: LocalHttp
) -> Iterator[tuple[SyncdProcess, str]]:
    mode: str = request.param
    env = {"SYNCD_AUTH_MODE": mode, "SYNCD_API_KEYS": f"svc:{key_hash(SERVICE_KEY)}"}
    if mode == "jwt":
        env |= {"SYNCD_JWT_ALGORITHMS": "RS256", "SYNCD_JWT_JWKS_URL": issuer.jwks.url,
                "SYNCD_JWT_ISSUER": ISSUER, "SYNCD_JWT_AUDIENCE": AUDIENCE}
        token = issuer.token("alice")
    elif mode == "forward":
        env |= {"SYNCD_FORWARD_URL": api.url + "/whoami"}
        token = SESSION
    else:
        token = SERVICE_KEY
    server = SyncdProcess(database_url, env=env)
    yield server, token
    server.stop()


def _doc(doc_id: str) -> dict[str, Any]:
    return {"id": doc_id, "title": "t", "_deleted": False}


@pytest.fixture()
def collection(database_url: str) -> str:
    return register(database_url, TODO_SCHEMA)


def test_native_api(mode_server: tuple[SyncdProcess, str], collection: str) -> None:
    server, token = mode_server
    url = f"{server.url}/api/v1/sync/{collection}"
    good = {"Authorization": f"Bearer {token}"}
    assert httpx.post(url, json=[{"newDocumentState": _doc("n1")}], headers=good).json() == []
    assert httpx.get(url, headers=good).json()["documents"] == [_doc("n1")]
    bad = {"Authorization": f"Bearer {token}x"}
    assert httpx.get(url, headers=bad).status_code == 401
    assert httpx.post(url, json=[{"newDocumentState": _doc("n2")}], headers=bad).status_code == 401


def test_rxdb_server_protocol(mode_server: tuple[SyncdProcess, str], collection: str) -> None:
    server, token = mode_server
    base = f"{server.url}/rxdb/{collection}/0"
    good = {"Authorization": f"Bearer {token}"}
    assert httpx.post(base + "/push", json=[{"newDocumentState": _doc("s1")}],
                      headers=good).json() == []
    page = httpx.get(base + "/pull?lwt=0&id=&limit=10", headers=good).json()
    assert page["documents"] == [_doc("s1")]
    refused = httpx.get(base + "/pull?lwt=0&id=&limit=10",
                        headers={"Authorization": f"Bearer {token}x"})
    assert refused.status_code == 401 and refused.json()["error"]


async def test_rxdb_websocket_protocol(
    mode_server: tuple[SyncdProcess, str], collection: str
) -> None:
    server, token = mode_server
    url = server.url.replace("http://", "ws://") + "/rxdb/ws"

    async def call(ws: websockets.ClientConnection, request: dict[str, Any]) -> Any:
        await ws.send(orjson.dumps({"collection": collection, **request}).decode())
        return orjson.loads(await asyncio.wait_for(ws.recv(), 10))["result"]

    async with websockets.connect(url) as ws:
        # As replicateWithWebsocketServer does: the token travels in the `auth` message.
        await ws.send(orjson.dumps({"id": "a", "collection": collection, "method": "auth",
                                    "params": [{"Authorization": f"Bearer {token}"}]}).decode())
        written = await call(ws, {"id": "1", "method": "masterWrite",
                                  "params": [[{"newDocumentState": _doc("w1")}]]})
        assert written == []
        page = await call(ws, {"id": "2", "method": "masterChangesSince", "params": [None, 10]})
        assert page["documents"] == [_doc("w1")]

    async with websockets.connect(url + f"?access_token={token}x") as ws:
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(3):
                await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401
