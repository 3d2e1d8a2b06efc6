"""The rxdb-server protocol (``replicateServer``) against a real syncd: what that client sends,
byte for byte, and what it needs back (rxdb-protocol.md §3, §8(a))."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import jwt
import orjson
import pytest
import uvicorn

from syncd.config import Settings
from syncd.db.urls import asyncpg_dsn
from syncd.web.app import create_app
from tests.conftest import TODO_SCHEMA, collection_id, register
from tests.integration.test_stream import SQL_UPSERT, table
from tests.support import PostgresServer, SyncdProcess, free_port

Doc = dict[str, Any]
SECRET = "rxdb-server-tests-shared-secret-0123456789"
UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
# The ids rxdb-server 15.22.0 breaks when it puts them into the pull URL unencoded.
AWKWARD_IDS = ["a&b#c=d/é", "x?y=z", "100%", "plus+sign", "sp ace", "semi;colon", "#hash"]


def base(server: SyncdProcess, collection: str, version: int = 0) -> str:
    return f"{server.url}/rxdb/{collection}/{version}"


def new_rows(*docs: Doc) -> list[Doc]:
    return [{"newDocumentState": d} for d in docs]


def raw_pull_url(url: str, checkpoint: Doc | None, limit: int | None) -> str:
    """The pull URL exactly as rxdb-server 15.22.0 builds it: nothing URL-encoded."""
    lwt = checkpoint["lwt"] if checkpoint else 0
    token = checkpoint["id"] if checkpoint else ""
    query = f"lwt={lwt}&id={token}" + (f"&limit={limit}" if limit is not None else "")
    return f"{url}/pull?{query}"


def token(ttl: float = 300, **claims: Any) -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time() + ttl), "scope": "read write",
                       **claims}, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


class EventStream:
    """Reads a text/event-stream body the way EventSource parses it, keeping every line."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines: list[str] = []
        self._chunks = response.aiter_bytes()
        self._buffer = b""
        self.ended = False

    async def line(self) -> str | None:
        while b"\n" not in self._buffer:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                self.ended = True
                return None
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\n")
        text = raw.decode().removesuffix("\r")
        self.lines.append(text)
        return text

    async def event(self, within: float = 10) -> Doc | None:
        """The next data event's JSON; None once the server ended the stream."""

        async def read() -> Doc | None:
            data: list[str] = []
            while True:
                line = await self.line()
                if line is None:
                    return None
                if line == "" and data:
                    event: Doc = orjson.loads("\n".join(data))
                    return event
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))

        return await asyncio.wait_for(read(), within)

    async def until_end(self, within: float) -> None:
        async def drain() -> None:
            while await self.line() is not None:
                pass

        await asyncio.wait_for(drain(), within)

    def assert_only_unnamed_data_events(self) -> None:
        assert not any(line.startswith(("event:", "id:")) for line in self.lines), self.lines
        assert not any("RESYNC" in line for line in self.lines)


@pytest.fixture()
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def jwt_server(database_url: str) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url, env={
        "SYNCD_AUTH_MODE": "jwt",
        "SYNCD_JWT_ALGORITHMS": "HS256",
        "SYNCD_JWT_SECRET": SECRET,
        "SYNCD_JWT_LEEWAY_SECONDS": "0",
    })
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tuned(database_url: str) -> Iterator[SyncdProcess]:
    """Small keepalive interval and stream buffer; CORS for two browser origins."""
    server = SyncdProcess(database_url, env={
        "SYNCD_SSE_KEEPALIVE_SECONDS": "0.2",
        "SYNCD_STREAM_BUFFER_BYTES": "65536",
        "SYNCD_CORS_ORIGINS": "http://app.example, http://localhost:3000",
    })
    yield server
    server.stop()


@pytest.fixture()
def version_2(database_url: str) -> str:
    return register(database_url, {**TODO_SCHEMA, "version": 2})


# --- versions, unknown paths, authentication ------------------------------------------------


METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


def test_older_versions_answer_426_on_every_path_and_method_before_authentication(
    jwt_server: SyncdProcess, version_2: str
) -> None:
    with httpx.Client(timeout=30) as http:
        # The current version needs credentials ...
        assert http.get(base(jwt_server, version_2, 2) + "/pull").status_code == 401
        # ... older ones are refused before they are asked for.
        for version in (0, 1):
            for suffix in ("", "/", "/pull", "/push", "/pullStream"):
                for method in METHODS:
                    url = base(jwt_server, version_2, version) + suffix
                    response = http.request(method, url, content=b"[]")
                    assert response.status_code == 426, (method, url, response.text)
                    assert response.headers["content-type"] == "application/json"
                    if method != "HEAD":
                        assert response.json() == {
                            "code": 426, "error": True,
                            "message": f"Outdated version {version} (newest is 2)",
                        }


def test_unknown_collections_versions_and_endpoints_are_json_404s(
    syncd: SyncdProcess, version_2: str
) -> None:
    with httpx.Client(timeout=30) as http:
        for url, code in [
            (f"{syncd.url}/rxdb/no_such_collection/0/pull", "unknown_collection"),
            (base(syncd, version_2, 3) + "/pull", "unknown_version"),
            (base(syncd, version_2, 3) + "/pullStream", "unknown_version"),
            (f"{syncd.url}/rxdb/{version_2}/02/pull", "unknown_version"),
            (f"{syncd.url}/rxdb/{version_2}/v2/pull", "unknown_version"),
            (base(syncd, version_2, 2), "not_found"),
            (base(syncd, version_2, 2) + "/", "not_found"),
            (base(syncd, version_2, 2) + "/changes", "not_found"),
        ]:
            response = http.get(url)
            assert response.status_code == 404, (url, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == code
        # The wrong method is a 405 that says which one is right.
        wrong = http.post(base(syncd, version_2, 2) + "/pull", json=[])
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET")
        assert wrong.json()["error"]
        wrong = http.get(base(syncd, version_2, 2) + "/push")
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")


async def test_401_and_403_are_json_and_come_before_any_stream(
    jwt_server: SyncdProcess, database_url: str, client: httpx.AsyncClient
) -> None:
    collection = await asyncio.to_thread(register, database_url, TODO_SCHEMA)
    url = base(jwt_server, collection)
    for response in [
        await client.get(url + "/pull?lwt=0&id=&limit=10"),
        await client.post(url + "/push", json=new_rows({"id": "a", "title": "t"})),
        await client.get(url + "/pullStream", headers={"Accept": "text/event-stream"}),
        await client.get(url + "/pull", headers=bearer(token(ttl=-60))),  # expired
    ]:
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"]
    # A browser's EventSource cannot send headers: the token may come as a query parameter.
    async with client.stream("GET", url + f"/pullStream?access_token={token()}") as response:
        assert response.status_code == 200

    admins_only = await asyncio.to_thread(
        register, database_url, TODO_SCHEMA, None,
        {"read": {"scope": ["admin"]}, "write": {"scope": ["admin"]}},
    )
    url = base(jwt_server, admins_only)
    for response in [
        await client.get(url + "/pull?lwt=0&id=&limit=10", headers=bearer(token())),
        await client.post(url + "/push", json=new_rows({"id": "a", "title": "t"}),
                          headers=bearer(token())),
        await client.get(url + "/pullStream", headers=bearer(token())),
    ]:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "forbidden"


# --- pull -------------------------------------------------------------------------------------


def test_pull_pages_with_the_raw_checkpoint_the_old_client_sends_back(
    syncd: SyncdProcess, collection: str
) -> None:
    url = base(syncd, collection)
    with httpx.Client(timeout=30) as http:
        docs = [{"id": doc_id, "title": "t", "_deleted": False} for doc_id in AWKWARD_IDS]
        assert http.post(url + "/push", json=new_rows(*docs)).json() == []

        sizes, seen, checkpoint = [], [], None
        while True:
            # rxdb-server sends Content-Type: application/json on its GETs too.
            response = http.get(raw_pull_url(url, checkpoint, 2),
                                headers={"Content-Type": "application/json"})
            assert response.status_code == 200, response.text
            page = response.json()
            sizes.append(len(page["documents"]))
            seen += page["documents"]
            if len(page["documents"]) < 2:  # the client stops at the first short page
                break
            assert UNRESERVED.fullmatch(page["checkpoint"]["id"])
            assert isinstance(page["checkpoint"]["lwt"], int)
            checkpoint = page["checkpoint"]
        assert sizes == [2, 2, 2, 1]  # never a short page while more changes exist
        assert sorted(d["id"] for d in seen) == sorted(AWKWARD_IDS)
        assert all(d == docs[AWKWARD_IDS.index(d["id"])] for d in seen)

        # An empty page echoes the request's checkpoint; an encoded id (17.2+) reads the same.
        last = page["checkpoint"]
        encoded_id = quote(last["id"], safe="").replace(".", "%2E")
        encoded = f"{url}/pull?lwt={last['lwt']}&id={encoded_id}&limit=2"
        for pull_url in (raw_pull_url(url, last, 2), encoded):
            assert http.get(pull_url).json() == {"documents": [], "checkpoint": last}


def test_pull_without_limit_or_parameters(syncd: SyncdProcess, collection: str) -> None:
    url = base(syncd, collection)
    with httpx.Client(timeout=30) as http:
        assert http.get(url + "/pull").json() == {
            "documents": [], "checkpoint": {"id": "", "lwt": 0},
        }
        assert http.get(url + "/pull?lwt=0.0&id=").json()["checkpoint"] == {"id": "", "lwt": 0}
        docs = [{"id": f"d{i:03}", "title": "t", "_deleted": False} for i in range(101)]
        assert http.post(url + "/push", json=new_rows(*docs)).json() == []
        first = http.get(url + "/pull").json()  # SYNCD_PULL_DEFAULT_LIMIT (100)
        assert len(first["documents"]) == 100 and first["checkpoint"]
        rest = http.get(raw_pull_url(url, first["checkpoint"], None)).json()
        assert [d["id"] for d in first["documents"] + rest["documents"]] == [
            d["id"] for d in docs
        ]
        bad = http.get(url + "/pull?lwt=0&id=&limit=ten")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_limit"


def test_a_checkpoint_syncd_did_not_issue_is_served_from_the_beginning(
    syncd: SyncdProcess, collection: str
) -> None:
    # A 400 would be retried forever: a client that kept the checkpoint of another server
    # (rxdb-server's own: a document id and a fractional lwt), or that sends lwt=undefined,
    # gets everything again, then continues from syncd's checkpoint.
    url = base(syncd, collection)
    with httpx.Client(timeout=30) as http:
        docs = [{"id": f"f{i}", "title": "t", "_deleted": False} for i in range(3)]
        assert http.post(url + "/push", json=new_rows(*docs)).json() == []
        ours = http.get(url + "/pull?lwt=0&id=&limit=10").json()
        for query in ("lwt=1795468969713.01&id=f1&limit=10", "lwt=undefined&id=f1&limit=10",
                      "lwt=undefined&id=&limit=10", f"lwt=12&id={ours['checkpoint']['id']}x"):
            response = http.get(f"{url}/pull?{query}")
            assert response.status_code == 200, (query, response.text)
            assert response.json() == ours, query


# --- push -------------------------------------------------------------------------------------


def test_push_writes_and_answers_the_conflicting_master_states(
    syncd: SyncdProcess, collection: str
) -> None:
    url = base(syncd, collection)
    with httpx.Client(timeout=30) as http:
        v1 = {"id": "p1", "title": "one", "_deleted": False}
        v2 = {**v1, "title": "two"}
        stale = {**v1, "title": "stale"}
        assert http.post(url + "/push", json=new_rows(v1)).json() == []
        assert http.post(url + "/push", json=[
            {"assumedMasterState": v1, "newDocumentState": v2},
        ]).json() == []
        response = http.post(url + "/push", json=[
            {"assumedMasterState": v1, "newDocumentState": stale},  # assumes an old state
            {"newDocumentState": {"id": "p2", "title": "fresh", "_deleted": False}},
        ])
        assert response.status_code == 200
        assert response.json() == [v2]  # only the conflict; p2 was written
        # A row that believes the document is new (no assumedMasterState) conflicts too.
        believes_new = http.post(url + "/push", json=new_rows({**v1, "title": "insert"}))
        assert believes_new.json() == [v2]
        pulled = http.get(url + "/pull?lwt=0&id=&limit=10").json()["documents"]
        assert sorted(pulled, key=lambda d: d["id"]) == [
            v2, {"id": "p2", "title": "fresh", "_deleted": False},
        ]


def test_a_push_the_schema_refuses_is_forbidden_instead_of_retried_forever(
    syncd: SyncdProcess, collection: str
) -> None:
    url = base(syncd, collection)
    with httpx.Client(timeout=30) as http:
        response = http.post(url + "/push", json=new_rows(
            {"id": "ok", "title": "t"}, {"id": "bad", "done": "yes"},
        ))
        assert response.status_code == 403  # replicateServer cancels and emits forbidden$
        error = response.json()["error"]
        assert error["code"] == "schema_violation"
        assert "bad" in error["message"] and error["details"]
        assert http.get(url + "/pull").json()["documents"] == []  # nothing of it was written
        # A malformed body is still a 400: no client sends one, and it says what is wrong.
        malformed = http.post(url + "/push", content=b"{",
                              headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400


def test_a_push_not_declared_as_json_is_415_and_writes_nothing(
    syncd: SyncdProcess, collection: str
) -> None:
    # replicateServer always sends Content-Type: application/json; a text/plain POST is what a
    # page on another origin can send without a CORS preflight.
    url = base(syncd, collection)
    body = orjson.dumps(new_rows({"id": "plain", "title": "t"}))
    with httpx.Client(timeout=30) as http:
        response = http.post(url + "/push", content=body, headers={"Content-Type": "text/plain"})
        assert response.status_code == 415
        error = response.json()["error"]
        assert error["code"] == "unsupported_media_type"
        assert "Content-Type: application/json" in error["message"]
        assert http.get(url + "/pull").json()["documents"] == []
        accepted = http.post(url + "/push", content=body,
                             headers={"Content-Type": "application/json"})
        assert accepted.json() == []


# --- pullStream -------------------------------------------------------------------------------


async def test_pull_stream_headers_and_events_from_pushes_and_plain_sql(
    syncd: SyncdProcess, collection: str, db: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    url = base(syncd, collection)
    async with client.stream("GET", url + "/pullStream",
                             headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["connection"] == "keep-alive"
        assert response.headers["x-accel-buffering"] == "no"
        events = EventStream(response)
        assert await asyncio.wait_for(events.line(), 5) == "retry: 1000"  # flushed at once

        pushed = {"id": "p", "title": "pushed", "_deleted": False}
        assert (await client.post(url + "/push", json=new_rows(pushed))).json() == []
        event = await events.event()
        assert event is not None
        assert event["documents"] == [pushed]
        assert set(event["checkpoint"]) == {"id", "lwt"}

        await db.execute(SQL_UPSERT, await collection_id(db, collection), "from-sql")
        event = await events.event()
        assert event is not None
        assert [d["id"] for d in event["documents"]] == ["from-sql"]
        # An event's checkpoint is a pull checkpoint: nothing is older than it.
        tail = await client.get(raw_pull_url(url, event["checkpoint"], 10))
        assert tail.json() == {"documents": [], "checkpoint": event["checkpoint"]}
    events.assert_only_unnamed_data_events()


async def test_a_change_committed_right_after_the_headers_arrive_is_delivered(
    syncd: SyncdProcess, database_url: str, db: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    # The client's resync pull starts when the stream opens; a change committed after that
    # moment must come through the stream. Each round starts a fresh feed (a new collection).
    for attempt in range(10):
        collection = await asyncio.to_thread(register, database_url, TODO_SCHEMA)
        cid = await collection_id(db, collection)
        async with client.stream("GET", base(syncd, collection) + "/pullStream") as response:
            await db.execute(SQL_UPSERT, cid, f"right-after-{attempt}")
            event = await EventStream(response).event(within=10)
            assert event is not None, attempt
            assert [d["id"] for d in event["documents"]] == [f"right-after-{attempt}"]


class InProcessSyncd:
    """The app under a real uvicorn in a thread, for looking at the hub while streams run."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
        ))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=lambda: self.loop.run_until_complete(self.server.serve()), daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "did not start"
            time.sleep(0.05)

    def subscribers(self) -> int:
        async def count() -> int:
            return int(self.app.state.hub.subscriber_count)

        return asyncio.run_coroutine_threadsafe(count(), self.loop).result(10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.loop.close()


async def test_the_subscription_exists_before_the_headers_and_ends_with_the_client(
    database_url: str, collection: str, client: httpx.AsyncClient
) -> None:
    server = InProcessSyncd(Settings(database_url=database_url))
    try:
        url = f"{server.url}/rxdb/{collection}/0/pullStream"
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            assert server.subscribers() == 1  # registered when the headers arrive
            async with client.stream("GET", url):
                assert server.subscribers() == 2
        deadline = time.monotonic() + 5
        while server.subscribers():  # the client left: unsubscribed
            assert time.monotonic() < deadline, "subscriptions outlived their clients"
            await asyncio.sleep(0.05)
    finally:
        server.stop()


async def test_a_keepalive_comment_is_sent_on_an_idle_stream(
    tuned: SyncdProcess, collection: str, client: httpx.AsyncClient
) -> None:
    async with client.stream("GET", base(tuned, collection) + "/pullStream") as response:
        events = EventStream(response)
        started = time.monotonic()
        for _ in range(3):
            while await asyncio.wait_for(events.line(), 5) != ": keepalive":
                pass
        assert time.monotonic() - started < 3
        # Comments do not get in the way of events.
        doc = {"id": "k", "title": "t", "_deleted": False}
        await client.post(base(tuned, collection) + "/push", json=new_rows(doc))
        event = await events.event()
        assert event is not None and event["documents"] == [doc]
    events.assert_only_unnamed_data_events()


def dechunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response; asserts that the terminating chunk is there."""
    body, rest = b"", raw
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return body
        body, rest = body + rest[:size], rest[size + 2:]


async def test_a_stalled_reader_gets_its_stream_ended_never_a_resync_event(
    tuned: SyncdProcess, collection: str, db: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    url = base(tuned, collection)
    # A client that stops reading: a small receive buffer, and nothing read after the headers.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", tuned.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /rxdb/{collection}/0/pullStream HTTP/1.1\r\nHost: syncd\r\n"
                 "Accept: text/event-stream\r\nConnection: close\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")

    fast_docs: dict[str, Doc] = {}
    async with client.stream("GET", url + "/pullStream") as response:
        fast = EventStream(response)

        async def read_fast() -> None:
            while (event := await fast.event(within=60)) is not None:
                fast_docs.update((d["id"], d) for d in event["documents"])

        fast_task = asyncio.create_task(read_fast())
        # ~6 MB in frames of ~50 kB (each fits the 64 kB buffer of a reader that keeps up)
        # stream past the stalled reader, more than the socket buffers between it and syncd.
        payload = "x" * 5_000
        for batch in range(120):
            docs = [{"id": f"b{batch}-{i}", "title": "t", "payload": payload}
                    for i in range(10)]
            assert (await client.post(url + "/push", json=new_rows(*docs))).json() == []
            sent = time.monotonic()
            while not {d["id"] for d in docs} <= set(fast_docs):
                assert time.monotonic() - sent < 5, "the stalled reader held the others up"
                await asyncio.sleep(0.01)
        fast_task.cancel()
    fast.assert_only_unnamed_data_events()

    # The stalled reader resumes: what was already on its way, then the end of the stream.
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    body = dechunk(raw).decode()
    assert "RESYNC" not in body
    assert not re.search(r"^(event|id):", body, re.MULTILINE)
    # What it did get is a gap-free prefix: a resync pull from its last checkpoint completes it.
    checkpoint: Doc | None = None
    received: dict[str, Doc] = {}
    for line in body.splitlines():
        if line.startswith("data: "):
            event = orjson.loads(line[6:])
            received.update((d["id"], d) for d in event["documents"])
            checkpoint = event["checkpoint"]
    assert len(received) < 1200  # it really fell behind
    while True:
        page = (await client.get(raw_pull_url(url, checkpoint, 50))).json()
        received.update((d["id"], d) for d in page["documents"])
        checkpoint = page["checkpoint"]
        if len(page["documents"]) < 50:
            break
    assert received == await table(db, collection)


async def test_a_stream_ends_when_its_token_expires_and_the_reconnect_is_refused(
    jwt_server: SyncdProcess, database_url: str, client: httpx.AsyncClient
) -> None:
    collection = await asyncio.to_thread(register, database_url, TODO_SCHEMA)
    url = base(jwt_server, collection) + "/pullStream"
    short = token(ttl=2)
    started = time.monotonic()
    async with client.stream("GET", url, headers=bearer(short)) as response:
        assert response.status_code == 200
        events = EventStream(response)
        await events.until_end(within=10)
    assert 0.5 < time.monotonic() - started < 6
    events.assert_only_unnamed_data_events()
    again = await client.get(url, headers=bearer(short))
    assert again.status_code == 401 and again.json()["error"]["code"] == "token_expired"


async def test_database_down_a_stream_request_gets_a_200_stream_that_ends(
    postgres: PostgresServer, database_url: str, db: asyncpg.Connection,
    client: httpx.AsyncClient,
) -> None:
    collection = await asyncio.to_thread(register, database_url, TODO_SCHEMA)
    server = SyncdProcess(database_url)
    admin = await asyncpg.connect(asyncpg_dsn(postgres.admin_url))
    database = await db.fetchval("SELECT current_database()")
    url = base(server, collection)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name LIKE 'syncd%'", database
        )
        # Pull and push may say "retry later"; the client retries them anyway ...
        pulled = await client.get(url + "/pull?lwt=0&id=&limit=10")
        assert pulled.status_code == 503 and pulled.json()["error"]
        # ... but a non-200 stream answer makes newer EventSources give up for good.
        started = time.monotonic()
        async with client.stream("GET", url + "/pullStream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            events = EventStream(response)
            await events.until_end(within=20)
        assert time.monotonic() - started < 20
        assert events.lines[0].startswith("retry: ")
        assert not any(line.startswith("data:") for line in events.lines)
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
    try:
        # Back: the reconnect streams again.
        async with client.stream("GET", url + "/pullStream") as response:
            events = EventStream(response)
            doc = {"id": "after", "title": "t", "_deleted": False}
            deadline = time.monotonic() + 20
            while (await client.post(url + "/push", json=new_rows(doc))).status_code != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            event = await events.event(within=20)
            assert event is not None and event["documents"] == [doc]
    finally:
        server.stop()


# --- CORS -------------------------------------------------------------------------------------


def preflight(http: httpx.Client, url: str, origin: str) -> httpx.Response:
    return http.options(url, headers={
        "Origin": origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization,content-type,x-tenant",
    })


def assert_cors_for(response: httpx.Response, origin: str) -> None:
    assert response.headers["access-control-allow-origin"] == origin
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in response.headers["vary"]


def test_cors_echoes_configured_origins_with_credentials(
    tuned: SyncdProcess, version_2: str
) -> None:
    url = base(tuned, version_2, 2)
    with httpx.Client(timeout=30) as http:
        for origin in ("http://app.example", "http://localhost:3000"):
            answer = preflight(http, url + "/pull", origin)
            assert answer.status_code == 204
            assert_cors_for(answer, origin)
            assert answer.headers["access-control-allow-methods"] == "GET, POST"
            assert answer.headers["access-control-allow-headers"] == (
                "authorization,content-type,x-tenant"
            )
            headers = {"Origin": origin}
            assert_cors_for(http.get(url + "/pull?lwt=0&id=&limit=1", headers=headers), origin)
            assert_cors_for(http.post(url + "/push", json=[], headers=headers), origin)
            with http.stream("GET", url + "/pullStream", headers=headers) as stream:
                assert stream.status_code == 200
                assert_cors_for(stream, origin)
            # The browser must be able to read a 426 to tell the app it is outdated.
            outdated = http.get(base(tuned, version_2, 0) + "/pull", headers=headers)
            assert outdated.status_code == 426
            assert_cors_for(outdated, origin)
        # Another origin gets no CORS headers at all; requests without Origin neither.
        for response in (
            preflight(http, url + "/pull", "http://evil.example"),
            http.get(url + "/pull", headers={"Origin": "http://evil.example"}),
            http.get(url + "/pull"),
        ):
            assert "access-control-allow-origin" not in response.headers
            assert "access-control-allow-credentials" not in response.headers


def test_cors_any_origin_reflects_the_origin_and_never_sends_a_star(
    database_url: str, collection: str
) -> None:
    server = SyncdProcess(database_url, env={"SYNCD_CORS_ORIGINS": "*"})
    try:
        url = base(server, collection)
        with httpx.Client(timeout=30) as http:
            origin = "https://anything.example:8443"
            answer = preflight(http, url + "/pullStream", origin)
            assert answer.status_code == 204
            assert_cors_for(answer, origin)
            assert_cors_for(http.get(url + "/pull", headers={"Origin": origin}), origin)
            # The native API is covered too.
            native = http.get(f"{server.url}/api/v1/sync/{collection}", headers={"Origin": origin})
            assert_cors_for(native, origin)
            assert all(value != "*" for value in answer.headers.values())
    finally:
        server.stop()


def test_without_configured_origins_there_are_no_cors_headers(
    syncd: SyncdProcess, collection: str
) -> None:
    with httpx.Client(timeout=30) as http:
        response = http.get(base(syncd, collection) + "/pull",
                            headers={"Origin": "http://app.example"})
        assert response.status_code == 200
        assert not any(name.startswith("access-control-") for name in response.headers)


async def test_sigterm_ends_open_streams_at_once_and_the_node_exits_promptly(
    database_url: str, collection: str, client: httpx.AsyncClient
) -> None:
    server = SyncdProcess(database_url)
    try:
        url = base(server, collection)
        async with client.stream("GET", url + "/pullStream") as response:
            events = EventStream(response)
            assert await asyncio.wait_for(events.line(), 5) == "retry: 1000"
            started = time.monotonic()
            server.process.terminate()
            # The stream ends (the client reconnects elsewhere), not cut at the graceful timeout.
            while await asyncio.wait_for(events.line(), 8) is not None:
                pass
            assert time.monotonic() - started < 3
        server.process.wait(10)
        assert time.monotonic() - started < 5
        assert server.process.returncode == 0
    finally:
        server.stop()
