"""Forward authentication against a real API on loopback: expiry, cross-site requests with
cookies, and revocation of open streams."""

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

from syncd.auth.apikeys import key_hash
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
        self.failing: set[str] = set()  # sessions the API cannot judge right now (503)
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
            if session in self.failing:
                return 503, {}, b"down for maintenance"
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


# --- revocation of open streams ---------------------------------------------------------------

RECHECK_SECONDS = 1.0
SERVICE_KEY = "sk_recheck_tests_0123456789abcdef"
# What a close may take beyond the recheck interval: the API's answer and a busy test machine.
SLACK_SECONDS = 4.0


@pytest.fixture(scope="module")
def recheck_server(database_url: str, api: Api) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url, env={
        "SYNCD_AUTH_MODE": "forward",
        "SYNCD_FORWARD_URL": api.http.url + "/auth/check",
        # A long positive cache: the rechecks must not be answered from it.
        "SYNCD_FORWARD_CACHE_SECONDS": "300",
        "SYNCD_FORWARD_RECHECK_SECONDS": str(RECHECK_SECONDS),
        "SYNCD_API_KEYS": f"svc:{key_hash(SERVICE_KEY)}",
    })
    yield server
    server.stop()


def service_write(server: SyncdProcess, collection: str, owner: str, doc_id: str) -> None:
    """The API beside syncd writes into ``owner``'s partition with its service key."""
    response = httpx.post(
        f"{server.url}/api/v1/sync/{collection}", timeout=30,
        content=orjson.dumps([{"newDocumentState": {"id": doc_id, "title": "t", "owner": owner,
                                                    "_deleted": False}}]),
        headers={"Authorization": f"Bearer {SERVICE_KEY}", "X-Syncd-Partition": owner,
                 "Content-Type": "application/json"},
    )
    assert response.status_code == 200 and response.json() == [], response.text


class Streams:
    """One user's three kinds of open stream on one collection, recording what each received."""

    def __init__(self, server: SyncdProcess, collection: str, token: str) -> None:
        self.server, self.collection, self.token = server, collection, token
        self.received: dict[str, list[str]] = {"native": [], "rxdb-ws": [], "sse": []}
        self.ended: dict[str, float] = {}
        self.close_codes: dict[str, int | None] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._arrived = asyncio.Event()

    async def open(self) -> None:
        native = await websockets.connect(
            ws_url(self.server, f"/api/v1/sync/{self.collection}/stream"
                                f"?access_token={self.token}"))
        assert await asyncio.wait_for(native.recv(), 10) == '"RESYNC"'
        rx = await websockets.connect(ws_url(self.server, "/rxdb/ws"))
        for request in ({"id": "a", "method": "auth",
                         "params": [{"Authorization": f"Bearer {self.token}"}]},
                        {"id": "stream", "method": "masterChangeStream$", "params": []}):
            await rx.send(orjson.dumps({"collection": self.collection, **request}).decode())
        assert orjson.loads(await asyncio.wait_for(rx.recv(), 10))["result"] == "RESYNC"
        http = httpx.AsyncClient(timeout=None)
        sse = await http.send(
            http.build_request("GET", f"{self.server.url}/rxdb/{self.collection}/0/pullStream",
                               headers={"Authorization": f"Bearer {self.token}"}),
            stream=True)
        assert sse.status_code == 200
        lines = sse.aiter_lines()
        assert (await asyncio.wait_for(anext(lines), 10)).startswith("retry:")
        self._tasks = [asyncio.create_task(self._read_ws("native", native)),
                       asyncio.create_task(self._read_ws("rxdb-ws", rx)),
                       asyncio.create_task(self._read_sse(http, sse, lines))]

    async def _read_ws(self, name: str, ws: websockets.ClientConnection) -> None:
        try:
            async for message in ws:
                self.received[name].append(str(message))
                self._arrived.set()
        except websockets.ConnectionClosed:
            pass
        self.ended[name] = time.monotonic()
        self.close_codes[name] = ws.close_code

    async def _read_sse(self, http: httpx.AsyncClient, sse: httpx.Response,
                        lines: Any) -> None:
        try:
            async for line in lines:
                if line.startswith("data:"):
                    self.received["sse"].append(line)
                    self._arrived.set()
        except httpx.HTTPError:
            pass
        self.ended["sse"] = time.monotonic()
        await sse.aclose()
        await http.aclose()

    async def until_delivered(self, doc_id: str) -> None:
        async def delivered() -> None:
            while not all(any(doc_id in m for m in got) for got in self.received.values()):
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(delivered(), 10)

    async def until_ended(self, within: float) -> None:
        await asyncio.wait_for(asyncio.gather(*self._tasks), within)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_a_revoked_user_s_open_streams_end_within_the_recheck_interval(
    recheck_server: SyncdProcess, api: Api, owned: str
) -> None:
    session = f"rita-{uuid.uuid4().hex[:8]}"
    api.sessions[session] = {"sub": "rita"}
    streams = Streams(recheck_server, owned, session)
    await streams.open()
    try:
        service_write(recheck_server, owned, "rita", "before")
        await streams.until_delivered("before")
        # Streams are rechecked every second (the 300 s cache notwithstanding) and stay open
        # while the API says yes.
        await asyncio.sleep(2.5 * RECHECK_SECONDS)
        assert not streams.ended
        api.revoke(session)
        revoked = time.monotonic()
        await streams.until_ended(RECHECK_SECONDS + SLACK_SECONDS)
        assert streams.close_codes == {"native": 4401, "rxdb-ws": 4401}
        assert max(streams.ended.values()) - revoked < RECHECK_SECONDS + SLACK_SECONDS
        service_write(recheck_server, owned, "rita", "after")
        await asyncio.sleep(0.5)
        assert not any("after" in m for got in streams.received.values() for m in got)
    finally:
        await streams.close()
    # The recheck's no also replaced the cached yes: HTTP is refused at once, not in 300 s.
    refused = httpx.get(f"{recheck_server.url}/api/v1/sync/{owned}",
                        headers={"Authorization": f"Bearer {session}"}, timeout=30)
    assert refused.status_code == 401, refused.text


async def test_streams_outlast_a_short_api_outage_but_not_a_long_one(
    recheck_server: SyncdProcess, api: Api, owned: str
) -> None:
    session = f"uma-{uuid.uuid4().hex[:8]}"
    api.sessions[session] = {"sub": "uma"}
    streams = Streams(recheck_server, owned, session)
    await streams.open()
    try:
        api.failing.add(session)  # 503: the API cannot tell
        await asyncio.sleep(1.5 * RECHECK_SECONDS)  # one or two unconfirmed rechecks
        api.failing.discard(session)
        await asyncio.sleep(1.5 * RECHECK_SECONDS)  # confirmed again
        assert not streams.ended
        service_write(recheck_server, owned, "uma", "during")
        await streams.until_delivered("during")
        api.failing.add(session)
        failing = time.monotonic()
        await streams.until_ended(3 * RECHECK_SECONDS + SLACK_SECONDS)
        # 1013: try again later (the reconnect gets the API's answer, 503 while it is down).
        assert streams.close_codes == {"native": 1013, "rxdb-ws": 1013}
        assert max(streams.ended.values()) - failing >= 2 * RECHECK_SECONDS
    finally:
        api.failing.discard(session)
        await streams.close()
