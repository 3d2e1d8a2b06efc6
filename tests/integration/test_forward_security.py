"""Forward authentication against a real API on loopback: expiry, and later cross-site requests
and revocation of open streams."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.typing import Origin

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


# --- cross-site requests with cookies ---------------------------------------------------------

APP = "http://app.example"  # the app's origin, in SYNCD_CORS_ORIGINS
EVIL = "http://evil.example"  # a page on another site, whose browser still sends the cookie
ALICE_COOKIE = {"Cookie": "session=alice-cookie"}
ALICE_TOKEN = "alice-token"


@pytest.fixture(scope="module")
def cookie_server(database_url: str, api: Api) -> Iterator[SyncdProcess]:
    api.sessions["alice-cookie"] = api.sessions[ALICE_TOKEN] = {"sub": "alice"}
    server = SyncdProcess(database_url, env={
        "SYNCD_AUTH_MODE": "forward",
        "SYNCD_FORWARD_URL": api.http.url + "/auth/check",
        "SYNCD_FORWARD_CACHE_SECONDS": "30",
        "SYNCD_CORS_ORIGINS": APP,
    })
    yield server
    server.stop()


def alice_doc(doc_id: str) -> dict[str, Any]:
    return {"id": doc_id, "title": "t", "owner": "alice", "_deleted": False}


def rows(*ids: str) -> bytes:
    return orjson.dumps([{"newDocumentState": alice_doc(i)} for i in ids])


def stored_ids(server: SyncdProcess, collection: str) -> list[str]:
    """What alice's partition holds, read as a server would (no Origin)."""
    response = httpx.get(f"{server.url}/api/v1/sync/{collection}",
                         headers={"Authorization": f"Bearer {ALICE_TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    return sorted(d["id"] for d in response.json()["documents"])


def assert_cross_origin_403(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "cross_origin_credentials", error
    assert "SYNCD_CORS_ORIGINS" in error["message"] and EVIL in error["message"]


def test_native_http_refuses_cookies_from_a_foreign_origin_and_writes_nothing(
    cookie_server: SyncdProcess, api: Api, owned: str
) -> None:
    url = f"{cookie_server.url}/api/v1/sync/{owned}"
    with httpx.Client(timeout=30) as http:
        seen = len(api.seen)
        for content_type in ("text/plain", "application/json"):
            forged = http.post(url, content=rows("forged"),
                               headers={**ALICE_COOKIE, "Origin": EVIL,
                                        "Content-Type": content_type})
            assert_cross_origin_403(forged)
        assert_cross_origin_403(http.get(url, headers={**ALICE_COOKIE, "Origin": EVIL}))
        assert len(api.seen) == seen  # the cookie never reached the API
        assert stored_ids(cookie_server, owned) == []
        # The app's own origins, and callers without Origin (servers, curl), work.
        same_origin = {**ALICE_COOKIE, "Origin": cookie_server.url,
                       "Content-Type": "application/json"}
        assert http.post(url, content=rows("same"), headers=same_origin).json() == []
        allowed = {**ALICE_COOKIE, "Origin": APP, "Content-Type": "application/json"}
        assert http.post(url, content=rows("app"), headers=allowed).json() == []
        assert http.get(url, headers=ALICE_COOKIE).status_code == 200
        # Same-origin, but not JSON: 415, nothing written.
        plain = http.post(url, content=rows("plain"),
                          headers={**allowed, "Content-Type": "text/plain"})
        assert plain.status_code == 415
    assert stored_ids(cookie_server, owned) == ["app", "same"]


def test_a_token_counts_from_any_origin_and_foreign_cookies_are_not_forwarded(
    cookie_server: SyncdProcess, api: Api, owned: str
) -> None:
    response = httpx.post(
        f"{cookie_server.url}/api/v1/sync/{owned}", content=rows("by-token"), timeout=30,
        headers={**ALICE_COOKIE, "Origin": EVIL, "Content-Type": "application/json",
                 "Authorization": f"Bearer {ALICE_TOKEN}"},
    )
    assert response.status_code == 200 and response.json() == [], response.text
    asked = api.seen[-1]
    assert asked["authorization"] == f"Bearer {ALICE_TOKEN}" and "cookie" not in asked
    assert asked["origin"] == EVIL  # the API is told, and may refuse
    assert stored_ids(cookie_server, owned) == ["by-token"]


async def test_the_forward_endpoint_is_told_the_origin_and_what_the_request_was(
    cookie_server: SyncdProcess, api: Api, owned: str
) -> None:
    session = f"told-{uuid.uuid4().hex[:8]}"  # not in syncd's cache yet
    api.sessions[session] = {"sub": "alice"}
    cookie = {"Cookie": f"session={session}"}
    url = f"{cookie_server.url}/api/v1/sync/{owned}"
    headers = {**cookie, "Origin": APP, "Referer": APP + "/todos",
               "User-Agent": "browser/1.0", "Content-Type": "application/json"}
    assert httpx.post(url, content=rows("told"), headers=headers, timeout=30).json() == []
    asked = api.seen[-1]
    host = cookie_server.url.removeprefix("http://")
    assert asked["cookie"] == f"session={session}"
    assert asked["origin"] == APP and asked["referer"] == APP + "/todos"
    assert asked["user-agent"] == "browser/1.0"
    assert asked["x-forwarded-method"] == "POST"
    assert asked["x-forwarded-uri"] == f"/api/v1/sync/{owned}"
    assert asked["x-forwarded-host"] == host and asked["x-forwarded-proto"] == "http"
    assert asked["x-forwarded-for"] == "127.0.0.1"
    # Positive answers are cached per credentials and Origin: another Origin is asked again.
    seen = len(api.seen)
    assert httpx.get(url, headers={**cookie, "Origin": APP}, timeout=30).status_code == 200
    assert len(api.seen) == seen
    same_origin = {**cookie, "Origin": cookie_server.url}
    assert httpx.get(url, headers=same_origin, timeout=30).status_code == 200
    assert len(api.seen) == seen + 1 and api.seen[-1]["origin"] == cookie_server.url
    # A stream's upgrade is a GET of the stream's path; a token in the query is not in the URI.
    token = f"told-token-{uuid.uuid4().hex[:8]}"
    api.sessions[token] = {"sub": "alice"}
    stream = ws_url(cookie_server, f"/api/v1/sync/{owned}/stream?access_token={token}")
    async with websockets.connect(stream, origin=Origin(APP)) as ws:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
    asked = api.seen[-1]
    assert asked["authorization"] == f"Bearer {token}" and asked["origin"] == APP
    assert asked["x-forwarded-method"] == "GET"
    assert asked["x-forwarded-uri"] == f"/api/v1/sync/{owned}/stream"


async def test_the_native_stream_refuses_cookies_from_a_foreign_origin(
    cookie_server: SyncdProcess, api: Api, owned: str
) -> None:
    url = ws_url(cookie_server, f"/api/v1/sync/{owned}/stream")
    async with websockets.connect(url, origin=Origin(EVIL),
                                  additional_headers=ALICE_COOKIE) as ws:
        assert await closed_with(ws, 10) == 4403
    for origin in (APP, cookie_server.url):
        async with websockets.connect(url, origin=Origin(origin),
                                      additional_headers=ALICE_COOKIE) as ws:
            assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
    # A token counts from any origin; in the query it is not part of the URI the API is told.
    async with websockets.connect(url + f"?access_token={ALICE_TOKEN}", origin=Origin(EVIL),
                                  additional_headers=ALICE_COOKIE) as ws:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'


def test_the_rxdb_server_protocol_refuses_cookies_from_a_foreign_origin(
    cookie_server: SyncdProcess, owned: str
) -> None:
    base = f"{cookie_server.url}/rxdb/{owned}/0"
    json_type = {"Content-Type": "application/json"}
    with httpx.Client(timeout=30) as http:
        evil = {**ALICE_COOKIE, "Origin": EVIL}
        assert_cross_origin_403(http.get(base + "/pull?lwt=0&id=&limit=10", headers=evil))
        assert_cross_origin_403(http.post(base + "/push", content=rows("forged"),
                                          headers={**evil, **json_type}))
        assert_cross_origin_403(http.post(base + "/push", content=rows("forged"),
                                          headers={**evil, "Content-Type": "text/plain"}))
        assert_cross_origin_403(http.get(base + "/pullStream", headers=evil))
        assert stored_ids(cookie_server, owned) == []
        app = {**ALICE_COOKIE, "Origin": APP}
        assert http.post(base + "/push", content=rows("rx"),
                         headers={**app, **json_type}).json() == []
        page = http.get(base + "/pull?lwt=0&id=&limit=10", headers=app).json()
        assert [d["id"] for d in page["documents"]] == ["rx"]
        with http.stream("GET", base + "/pullStream", headers=app) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")


async def test_the_rxdb_websocket_refuses_cookies_from_a_foreign_origin(
    cookie_server: SyncdProcess, api: Api, owned: str
) -> None:
    url = ws_url(cookie_server, "/rxdb/ws")
    httpx.post(f"{cookie_server.url}/api/v1/sync/{owned}", content=rows("secret"), timeout=30,
               headers={"Authorization": f"Bearer {ALICE_TOKEN}",
                        "Content-Type": "application/json"})

    def request(request_id: str, method: str, *params: Any) -> str:
        return orjson.dumps({"id": request_id, "collection": owned, "method": method,
                             "params": list(params)}).decode()

    async with websockets.connect(url, origin=Origin(EVIL),
                                  additional_headers=ALICE_COOKIE) as ws:
        await ws.send(request("s", "masterChangeStream$"))
        await ws.send(request("w", "masterWrite", [{"newDocumentState": alice_doc("forged")}]))
        await ws.send(request("p", "masterChangesSince", None, 10))
        # An `auth` message without a token is the same cookie again: refused too.
        await ws.send(request("a", "auth", {"Cookie": "session=alice-cookie"}))
        answers: list[dict[str, Any]] = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                answers.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert ws.close_code == 4403
    assert {a["id"] for a in answers} == {"w", "p"}  # each answered, as a failure
    for answer in answers:
        assert answer["error"]["code"] == "cross_origin_credentials"
        assert answer["result"] in (None, {"documents": [], "checkpoint": None})
    assert stored_ids(cookie_server, owned) == ["secret"]

    # The app's origin with the cookie, and a token from anywhere (the `auth` message), work.
    async with websockets.connect(url, origin=Origin(APP), additional_headers=ALICE_COOKIE) as ws:
        await ws.send(request("p", "masterChangesSince", None, 10))
        page = orjson.loads(await asyncio.wait_for(ws.recv(), 10))["result"]
        assert [d["id"] for d in page["documents"]] == ["secret"]
    token = f"ws-token-{uuid.uuid4().hex[:8]}"  # not in syncd's cache yet
    api.sessions[token] = {"sub": "alice"}
    async with websockets.connect(url, origin=Origin(EVIL),
                                  additional_headers=ALICE_COOKIE) as ws:
        await ws.send(request("a", "auth", {"Authorization": f"Bearer {token}"}))
        await ws.send(request("p", "masterChangesSince", None, 10))
        page = orjson.loads(await asyncio.wait_for(ws.recv(), 10))["result"]
        assert [d["id"] for d in page["documents"]] == ["secret"]
        assert "cookie" not in api.seen[-1] and api.seen[-1]["origin"] == EVIL
