"""Forward authentication against a real API on loopback: expiry, and later cross-site requests
and revocation of open streams."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets

from tests.authworld import LocalHttp
from tests.conftest import TODO_SCHEMA, register
from tests.support import SyncdProcess

OWNED_SCHEMA: dict[str, Any] = {
    **TODO_SCHEMA,
    "properties": {**TODO_SCHEMA["properties"], "owner": {"type": "string"}},
}
ACCESS = {"partition_claim": "sub", "owner_field": "owner"}


class Api:
    """The API beside syncd: sessions by cookie (``session=<id>``) or bearer token, which the
    test can add and revoke while syncd runs; it records the headers of every check."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.seen: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.http = LocalHttp(self._answer)

    def _answer(self, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.seen.append(headers)
            scheme, _, token = headers.get("authorization", "").partition(" ")
            session = token if scheme == "Bearer" else None
            cookie = headers.get("cookie", "")
            if session is None and cookie.startswith("session="):
                session = cookie.removeprefix("session=")
            claims = self.sessions.get(session or "")
        if claims is None:
            return 401, {"Content-Type": "application/json"}, b'{"error": "who are you?"}'
        return 200, {"Content-Type": "application/json"}, orjson.dumps(claims)

    def revoke(self, session: str) -> None:
        with self._lock:
            del self.sessions[session]

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    world = Api()
    yield world
    world.close()


@pytest.fixture()
def owned(database_url: str) -> str:
    return register(database_url, OWNED_SCHEMA, access=ACCESS)


def ws_url(server: SyncdProcess, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def closed_with(ws: websockets.ClientConnection, seconds: float) -> int | None:
    """Read until the server closes the socket; its close code."""
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), seconds)
    return ws.close_code


# --- exp in the API's answer ------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain_server(database_url: str, api: Api) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url, env={
        "SYNCD_AUTH_MODE": "forward",
        "SYNCD_FORWARD_URL": api.http.url + "/auth/check",
        "SYNCD_FORWARD_CACHE_SECONDS": "0",
    })
    yield server
    server.stop()


async def test_a_numeric_string_exp_in_the_answer_ends_the_stream_with_4401(
    plain_server: SyncdProcess, api: Api, owned: str
) -> None:
    api.sessions["soon"] = {"sub": "sam", "exp": str(int(time.time()) + 3)}
    url = ws_url(plain_server, f"/api/v1/sync/{owned}/stream")
    started = time.monotonic()
    async with websockets.connect(url + "?access_token=soon") as ws:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
        assert await closed_with(ws, 15) == 4401
    assert time.monotonic() - started < 10


def test_an_exp_that_is_not_a_time_fails_closed(
    plain_server: SyncdProcess, api: Api, owned: str
) -> None:
    api.sessions["odd"] = {"sub": "olga", "exp": "next tuesday"}
    response = httpx.get(f"{plain_server.url}/api/v1/sync/{owned}",
                         headers={"Authorization": "Bearer odd"}, timeout=30)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "auth_unavailable"
