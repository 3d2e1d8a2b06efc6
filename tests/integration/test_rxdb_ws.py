"""RxDB's websocket replication (``replicateWithWebsocketServer``) against a real syncd.

A Python client speaks the client's envelope; it parses every frame it receives as JSON (a frame
that is not JSON fails the test) and checks that each request id is answered exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import jwt
import orjson
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from syncd.db.urls import asyncpg_dsn
from tests.authworld import AUDIENCE, HS_JWT_ENV, HS_SECRET, ISSUER
from tests.conftest import TODO_SCHEMA, collection_id, register
from tests.support import PostgresServer, SyncdProcess

Doc = dict[str, Any]
_ids = itertools.count()


def doc(doc_id: str, **fields: Any) -> Doc:
    return {"id": doc_id, "title": "t", "_deleted": False, **fields}


def ws_url(server: SyncdProcess, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/rxdb/ws" + query


class RxClient:
    """The client side of the envelope, recording everything the server sent."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.answers: dict[Any, Doc] = {}
        self.answer_order: list[Any] = []
        self.stream: list[Doc] = []
        self.answer_counts: Counter[str] = Counter()

    async def send(self, collection: Any, method: str, *params: Any,
                   request_id: str | None = None) -> str:
        request_id = request_id or f"db|flag|{next(_ids)}"
        await self.ws.send(orjson.dumps({"id": request_id, "collection": collection,
                                         "method": method, "params": list(params)}).decode())
        return request_id

    async def subscribe(self, collection: str, *, again: bool = False) -> None:
        """Subscribe; a new stream starts with two RESYNCs (one RxDB cannot drop); a repeated
        subscribe, or one to a collection that has no stream for the caller, gets nothing."""
        await self.send(collection, "masterChangeStream$", request_id="stream")
        for _ in range(0 if again else 2):
            frame = await self.stream_frame(collection)
            assert frame == {"id": "stream", "collection": collection, "result": "RESYNC"}

    async def receive(self, within: float = 10) -> Doc:
        text = await asyncio.wait_for(self.ws.recv(), within)
        assert isinstance(text, str)
        message: Doc = orjson.loads(text)  # every frame must be JSON
        assert set(message) <= {"id", "collection", "result", "error"}, message
        if message["id"] == "stream":
            self.stream.append(message)
        else:
            self.answer_counts[orjson.dumps(message["id"]).decode()] += 1
            self.answers[message["id"]] = message
            self.answer_order.append(message["id"])
        return message

    async def answer(self, request_id: str, within: float = 10) -> Doc:
        deadline = time.monotonic() + within
        while request_id not in self.answers:
            await self.receive(max(0.01, deadline - time.monotonic()))
        return self.answers[request_id]

    async def call(self, collection: Any, method: str, *params: Any) -> Doc:
        return await self.answer(await self.send(collection, method, *params))

    async def stream_frame(self, collection: str, within: float = 10) -> Doc:
        deadline = time.monotonic() + within
        while True:
            for frame in self.stream:
                if frame["collection"] == collection:
                    self.stream.remove(frame)
                    return frame
            await self.receive(max(0.01, deadline - time.monotonic()))

    async def quiet(self, seconds: float = 0.3) -> None:
        """Read whatever else arrives within ``seconds`` (there should be nothing)."""
        with pytest.raises(TimeoutError):
            while True:
                await self.receive(seconds)

    def assert_each_answered_once(self) -> None:
        assert all(count == 1 for count in self.answer_counts.values()), self.answer_counts


async def pull_all(client: RxClient, collection: str, batch: int) -> tuple[list[Doc], Any]:
    """RxDB's checkpoint iteration: pages until one is shorter than the batch size."""
    documents: list[Doc] = []
    checkpoint = None
    while True:
        page = (await client.call(collection, "masterChangesSince", checkpoint, batch))["result"]
        documents += page["documents"]
        if page["documents"]:
            checkpoint = page["checkpoint"]
        if len(page["documents"]) < batch:
            return documents, checkpoint


def http_push(server: SyncdProcess, collection: str, *docs: Doc,
              token: str | None = None) -> None:
    response = httpx.post(
        f"{server.url}/api/v1/sync/{collection}", timeout=30,
        json=[{"newDocumentState": d} for d in docs],
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    assert response.status_code == 200 and response.json() == [], response.text


# -- the protocol ----------------------------------------------------------------------------


SPECIAL_IDS = ["a&b#c=d/é", "plain", "sp ace", "%2F", "ü/ß?x=1", 'q"uote', "emoji😀"]


async def test_paging_through_ids_that_need_escaping(syncd: SyncdProcess, collection: str) -> None:
    async with websockets.connect(ws_url(syncd)) as ws:
        client = RxClient(ws)
        answer = await client.call(collection, "masterWrite",
                                   [{"newDocumentState": doc(i)} for i in SPECIAL_IDS])
        assert answer == {"id": answer["id"], "collection": collection, "result": []}

        pages = []
        checkpoint = None
        while True:
            page = (await client.call(collection, "masterChangesSince", checkpoint, 2))["result"]
            pages.append([d["id"] for d in page["documents"]])
            if not page["documents"]:
                break
            assert page["checkpoint"] != checkpoint  # a full page always advances
            checkpoint = page["checkpoint"]
        native = httpx.get(f"{syncd.url}/api/v1/sync/{collection}", params={"limit": 100}).json()
        assert [i for p in pages for i in p] == [d["id"] for d in native["documents"]]
        assert sorted(i for p in pages for i in p) == sorted(SPECIAL_IDS)
        assert [len(p) for p in pages] == [2, 2, 2, 1, 0]
        # The empty page echoes the checkpoint it was given, unchanged.
        again = await client.call(collection, "masterChangesSince", checkpoint, 2)
        assert again["result"] == {"documents": [], "checkpoint": checkpoint}
        documents, _ = await pull_all(client, collection, 3)
        assert documents == native["documents"]
        client.assert_each_answered_once()


async def test_master_write_answers_the_conflicting_master_states(
    syncd: SyncdProcess, collection: str
) -> None:
    async with websockets.connect(ws_url(syncd)) as ws:
        client = RxClient(ws)
        a1, a2 = doc("a", n=1), doc("a", n=2)

        async def write(*rows: Doc) -> Any:
            return (await client.call(collection, "masterWrite", list(rows)))["result"]

        assert await write({"newDocumentState": a1}) == []
        # A second insert of the id, a stale update and a retried insert all conflict ...
        assert await write({"newDocumentState": a2}) == [a1]
        assert await write({"assumedMasterState": doc("a", n=0), "newDocumentState": a2}) == [a1]
        # ... an update from the true master state is written (null assumed = absent).
        assert await write({"assumedMasterState": a1, "newDocumentState": a2}) == []
        mixed = await write({"assumedMasterState": None, "newDocumentState": doc("b")},
                            {"assumedMasterState": a1, "newDocumentState": doc("a", n=3)})
        assert mixed == [a2]
        documents, _ = await pull_all(client, collection, 10)
        assert {d["id"]: d for d in documents} == {"a": a2, "b": doc("b")}
        client.assert_each_answered_once()


async def test_stream_frames_for_native_pushes_and_plain_sql(
    syncd: SyncdProcess, collection: str, db: asyncpg.Connection
) -> None:
    async with websockets.connect(ws_url(syncd)) as ws:
        client = RxClient(ws)
        await client.subscribe(collection)
        # The subscription is in place before the next request is handled: the pull after it
        # and the stream together miss nothing.
        await pull_all(client, collection, 10)
        http_push(syncd, collection, doc("p"))
        frame = await client.stream_frame(collection)
        assert frame["id"] == "stream" and frame["collection"] == collection
        assert frame["result"]["documents"] == [doc("p")]
        assert set(frame["result"]["checkpoint"]) == {"id", "lwt"}

        await db.execute(
            "INSERT INTO syncd_documents (collection_id, id, data) VALUES "
            "($1, 'sql', '{\"id\": \"sql\", \"title\": \"from sql\", \"_deleted\": false}')",
            await collection_id(db, collection),
        )
        frame = await client.stream_frame(collection)
        assert [d["id"] for d in frame["result"]["documents"]] == ["sql"]
        # A frame's checkpoint is a pull checkpoint: nothing is older than it.
        tail = await client.call(collection, "masterChangesSince", frame["result"]["checkpoint"], 5)
        assert tail["result"]["documents"] == []
        await client.quiet()
        assert client.stream == []
        client.assert_each_answered_once()


@pytest.fixture()
def second(database_url: str) -> str:
    return register(database_url, TODO_SCHEMA)


async def test_two_collections_over_one_socket_each_get_only_their_frames(
    syncd: SyncdProcess, collection: str, second: str
) -> None:
    first = collection
    async with websockets.connect(ws_url(syncd)) as ws:
        client = RxClient(ws)
        await client.subscribe(first)
        await client.subscribe(second)
        await client.subscribe(first, again=True)  # a duplicate: still one frame per change
        await pull_all(client, first, 10)
        await pull_all(client, second, 10)
        http_push(syncd, first, doc("one"))
        http_push(syncd, second, doc("two"))
        one = await client.stream_frame(first)
        two = await client.stream_frame(second)
        assert one["result"]["documents"] == [doc("one")]
        assert two["result"]["documents"] == [doc("two")]
        http_push(syncd, first, doc("three"))
        assert (await client.stream_frame(first))["result"]["documents"] == [doc("three")]
        await client.quiet(0.5)
        assert client.stream == []  # no second copy of any frame


async def test_failures_are_answered_and_malformed_frames_are_ignored(
    syncd: SyncdProcess, collection: str
) -> None:
    async with websockets.connect(ws_url(syncd)) as ws:
        client = RxClient(ws)
        # Frames without an id cannot be answered: ignored, and the socket lives on.
        for frame in ["not json {", "[1, 2]", '"RESYNC"', "{}",
                      orjson.dumps({"collection": collection, "method": "masterChangesSince",
                                    "params": [None, 1]}).decode()]:
            await ws.send(frame)
        await ws.send(b'\xff\xfe binary')

        checkpoint = {"id": "x.1", "lwt": 7}
        unknown = await client.call("no_such_collection", "masterChangesSince", checkpoint, 10)
        assert unknown["result"] == {"documents": [], "checkpoint": checkpoint}
        assert unknown["error"]["status"] == 404
        assert "syncd collections add" in unknown["error"]["message"]
        write = await client.call("no_such_collection", "masterWrite",
                                  [{"newDocumentState": doc("x")}])
        assert write["result"] is None and write["error"]["code"] == "unknown_collection"
        await client.subscribe("no_such_collection", again=True)  # no stream, no answer, no harm

        bad = {
            "method": await client.call(collection, "noSuchMethod", 1),
            "batch": await client.call(collection, "masterChangesSince", None, "ten"),
            "limit": await client.call(collection, "masterChangesSince", None, 0),
            "checkpoint": await client.call(collection, "masterChangesSince", "cp-5", 10),
            "params": await client.call(collection, "masterWrite"),
            "schema": await client.call(collection, "masterWrite",
                                        [{"newDocumentState": {"id": "s", "title": 5}}]),
            "collection": await client.call(None, "masterChangesSince", None, 10),
        }
        assert {k: v["error"]["status"] for k, v in bad.items()} == {
            "method": 400, "batch": 400, "limit": 400, "checkpoint": 400, "params": 400,
            "schema": 422, "collection": 400,
        }
        for key in ("batch", "limit", "checkpoint", "collection"):
            assert bad[key]["result"] == {"documents": [], "checkpoint": None}
        for key in ("method", "params", "schema"):
            assert bad[key]["result"] is None

        # JSON that orjson cannot read (a lone surrogate) is still answered by its id.
        lone_doc = '{"newDocumentState": {"id": "\\ud800", "title": "t"}}'
        await ws.send(f'{{"id": "lone", "collection": "{collection}", "method": "masterWrite", '
                      f'"params": [[{lone_doc}]]}}')
        lone = await client.answer("lone")
        assert lone["result"] is None and lone["error"]["code"] == "invalid_json"

        # Nothing was written, and the socket still works.
        documents, _ = await pull_all(client, collection, 10)
        assert documents == []
        await client.quiet()
        client.assert_each_answered_once()
        assert client.stream == []


async def test_a_stalled_reader_gets_a_resync_frame(database_url: str, collection: str) -> None:
    server = SyncdProcess(database_url, env={"SYNCD_STREAM_BUFFER_BYTES": "65536"})
    try:
        async with websockets.connect(ws_url(server), max_queue=1, max_size=None) as ws, \
                httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            client = RxClient(ws)
            await client.subscribe(collection)
            await pull_all(client, collection, 10)
            payload = "x" * 100_000
            for batch in range(12):  # ~12 MB stream past a client that reads nothing
                response = await http.post(f"/api/v1/sync/{collection}", json=[
                    {"newDocumentState": doc(f"b{batch}-{i}", payload=payload)}
                    for i in range(10)
                ])
                assert response.json() == []
            while True:
                frame = await client.stream_frame(collection, within=10)
                if frame["result"] == "RESYNC":
                    break
                assert frame["result"]["documents"]
            assert frame == {"id": "stream", "collection": collection, "result": "RESYNC"}
            # Sent twice in a row, so that RxDB cannot drop both (see rxdb_ws._relay).
            assert await client.stream_frame(collection, within=10) == frame
            # The client pulls (as RxDB does on RESYNC) and has everything.
            documents, _ = await pull_all(client, collection, 50)
            assert len(documents) == 120
            client.assert_each_answered_once()
    finally:
        server.stop()


@pytest.fixture()
def own_database(postgres: PostgresServer) -> Iterator[tuple[str, str]]:
    """A database of its own (and a collection in it), for a test that cuts syncd off."""
    url = postgres.create_database()
    yield url, register(url, TODO_SCHEMA)
    postgres.drop_database(url)


async def test_a_failed_pull_answers_an_empty_page_and_the_stream_says_resync(
    postgres: PostgresServer, own_database: tuple[str, str]
) -> None:
    database_url, collection = own_database
    server = SyncdProcess(database_url, env={"SYNCD_COLLECTION_CACHE_SECONDS": "0"})
    admin = await asyncpg.connect(asyncpg_dsn(postgres.admin_url))
    database = database_url.split("?")[0].rsplit("/", 1)[1]
    try:
        async with websockets.connect(ws_url(server)) as ws:
            client = RxClient(ws)
            await client.subscribe(collection)
            await client.call(collection, "masterWrite", [{"newDocumentState": doc("before")}])
            _, checkpoint = await pull_all(client, collection, 10)
            # PostgreSQL goes away for syncd: connections cut, none accepted.
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()", database
            )
            page = await client.call(collection, "masterChangesSince", checkpoint, 10)
            assert page["result"] == {"documents": [], "checkpoint": checkpoint}
            assert page["error"]["status"] == 503
            write = await client.call(collection, "masterWrite", [{"newDocumentState": doc("w")}])
            assert write["result"] is None and write["error"]["status"] == 503
            # The client thinks it is caught up; the stream tells it to pull again.
            frames = [await client.stream_frame(collection, within=5)]
            while frames[-1]["result"] != "RESYNC":
                frames.append(await client.stream_frame(collection, within=5))
            assert [f["result"]["documents"] for f in frames[:-1]] in ([], [[doc("before")]])

            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            deadline = time.monotonic() + 15
            while True:  # the client's retried write succeeds once PostgreSQL is back
                write = await client.call(collection, "masterWrite",
                                          [{"newDocumentState": doc("w")}])
                if write["result"] == [] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert write["result"] == []
            client.assert_each_answered_once()
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
        server.stop()


async def test_sigterm_answers_requests_in_flight_then_closes_with_1012(
    database_url: str, collection: str, db: asyncpg.Connection
) -> None:
    server = SyncdProcess(database_url)
    try:
        http_push(server, collection, doc("locked", n=1))
        async with websockets.connect(ws_url(server)) as ws:
            client = RxClient(ws)
            await client.subscribe(collection)
            await pull_all(client, collection, 10)
            answered = len(client.answer_order)
            cid = await collection_id(db, collection)
            lock = db.transaction()
            await lock.start()
            try:
                # Hold the row: the write below waits for it, in flight.
                await db.execute("SELECT 1 FROM syncd_documents WHERE collection_id = $1 "
                                 "AND id = 'locked' FOR UPDATE", cid)
                write = await client.send(collection, "masterWrite", [
                    {"assumedMasterState": doc("locked", n=1),
                     "newDocumentState": doc("locked", n=2)}])
                await asyncio.sleep(0.5)
                server.process.terminate()
                await asyncio.sleep(0.3)
                queued = await client.send(collection, "masterChangesSince", None, 10)
                await asyncio.sleep(0.7)
                assert len(client.answer_order) == answered  # in flight, and the socket open
            finally:
                await lock.rollback()
            assert (await client.answer(write))["result"] == []
            assert (await client.answer(queued))["result"]["documents"][0]["n"] == 2
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await client.receive()
            assert ws.close_code == 1012
            assert client.answer_order[answered:] == [write, queued]
        server.process.wait(15)
        assert server.process.returncode == 0
    finally:
        server.stop()


# -- authentication --------------------------------------------------------------------------


def token(sub: str = "alice", ttl: float = 300, **claims: Any) -> str:
    now = time.time()
    return jwt.encode({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": int(now),
                       "exp": int(now + ttl), "scope": "read write", **claims},
                      HS_SECRET, algorithm="HS256")


def auth_message(headers: dict[str, str]) -> str:
    return orjson.dumps({"id": "authtoken1", "collection": "x", "method": "auth",
                         "params": [headers]}).decode()


@pytest.fixture(scope="module")
def jwt_server(database_url: str) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url, env={**HS_JWT_ENV, "SYNCD_JWT_LEEWAY_SECONDS": "0"})
    yield server
    server.stop()


async def test_after_a_reconnect_requests_before_auth_are_answered_in_order(
    jwt_server: SyncdProcess, collection: str
) -> None:
    http_push(jwt_server, collection, doc("old"), token=token())
    async with websockets.connect(ws_url(jwt_server)) as ws:
        client = RxClient(ws)
        # The observed sequence: the queued requests, then auth, then the stream, then a pull.
        write = await client.send(collection, "masterWrite", [{"newDocumentState": doc("new")}])
        first = await client.send(collection, "masterChangesSince", None, 10)
        await ws.send(auth_message({"Authorization": f"Bearer {token()}", "X-Other": "1"}))
        await client.subscribe(collection)
        second = await client.send(collection, "masterChangesSince", None, 10)

        assert (await client.answer(write))["result"] == []
        for pull in (first, second):
            page = (await client.answer(pull))["result"]
            assert [d["id"] for d in page["documents"]] == ["old", "new"]
        assert client.answer_order == [write, first, second]
        http_push(jwt_server, collection, doc("live"), token=token())
        frame = await client.stream_frame(collection)
        assert frame["result"]["documents"] == [doc("live")]
        await client.quiet()
        client.assert_each_answered_once()


async def test_a_token_in_the_url_or_a_bare_authorization_header_authenticates(
    jwt_server: SyncdProcess, collection: str
) -> None:
    async with websockets.connect(ws_url(jwt_server, f"?access_token={token()}")) as ws:
        page = await RxClient(ws).call(collection, "masterChangesSince", None, 10)
        assert page["result"] == {"documents": [], "checkpoint": None}
    async with websockets.connect(ws_url(jwt_server)) as ws:
        await ws.send(auth_message({"authorization": token()}))
        page = await RxClient(ws).call(collection, "masterChangesSince", None, 10)
        assert "error" not in page


@pytest.mark.parametrize("auth", ["bad token", "no auth message"])
async def test_without_valid_credentials_waiting_requests_are_answered_then_4401(
    jwt_server: SyncdProcess, collection: str, auth: str
) -> None:
    async with websockets.connect(ws_url(jwt_server)) as ws:
        client = RxClient(ws)
        write = await client.send(collection, "masterWrite", [{"newDocumentState": doc("no")}])
        pull = await client.send(collection, "masterChangesSince", {"id": "0.1", "lwt": 3}, 10)
        if auth == "bad token":
            await ws.send(auth_message({"Authorization": "Bearer not-a-jwt"}))
        started = time.monotonic()
        assert (await client.answer(write))["result"] is None
        page = await client.answer(pull)
        assert page["result"] == {"documents": [], "checkpoint": {"id": "0.1", "lwt": 3}}
        assert page["error"]["status"] == 401 and client.answers[write]["error"]["status"] == 401
        with pytest.raises(websockets.ConnectionClosed):
            await client.receive()
        assert ws.close_code == 4401
        assert time.monotonic() - started < (1 if auth == "bad token" else 5)
        client.assert_each_answered_once()
    pulled = httpx.get(f"{jwt_server.url}/api/v1/sync/{collection}",
                       headers={"Authorization": f"Bearer {token()}"}).json()
    assert pulled["documents"] == []  # nothing was written


async def test_the_socket_closes_with_4401_when_the_credentials_expire(
    jwt_server: SyncdProcess, collection: str
) -> None:
    async with websockets.connect(ws_url(jwt_server, f"?access_token={token(ttl=2)}")) as ws:
        client = RxClient(ws)
        await client.subscribe(collection)
        assert "error" not in await client.call(collection, "masterChangesSince", None, 10)
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed):
            await client.receive(within=5)
        assert ws.close_code == 4401 and time.monotonic() - started < 4


class UnreadSocket:
    """A websocket client that reads only when told to (websockets' sans-I/O protocol over a
    plain TCP stream): it can still send after the server's close frame has arrived, the way a
    busy client does before its event loop gets to that frame."""

    def __init__(self, url: str) -> None:
        self.uri = parse_uri(url)
        self.protocol = ClientProtocol(self.uri)
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.uri.host, self.uri.port)
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while self.protocol.state is State.CONNECTING:
            self.protocol.receive_data(await self.reader.read(65536))
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc

    async def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    async def read_until_closed(self, within: float = 10) -> list[str]:
        """Every text frame the server sent, up to its close frame."""
        texts: list[str] = []
        deadline = time.monotonic() + within
        while self.protocol.close_rcvd is None:
            data = await asyncio.wait_for(self.reader.read(65536),
                                          max(0.01, deadline - time.monotonic()))
            self.protocol.receive_data(data) if data else self.protocol.receive_eof()
            texts += [bytes(event.data).decode() for event in self.protocol.events_received()
                      if isinstance(event, Frame) and event.opcode is Opcode.TEXT]
            if not data:
                break
        self.writer.close()
        return texts

    async def _flush(self) -> None:
        self.writer.write(b"".join(self.protocol.data_to_send()))
        await self.writer.drain()


async def test_a_request_sent_across_the_expiry_close_is_answered_on_the_next_socket(
    jwt_server: SyncdProcess, collection: str
) -> None:
    """The client sends a write after syncd sent 4401 but before it read that close frame:
    syncd cannot answer on that socket, and RxDB's client would wait for the answer forever.
    The failure answer (nothing written) arrives on the identity's next socket instead."""
    expiring = token(ttl=1)
    socket = UnreadSocket(ws_url(jwt_server, f"?access_token={expiring}"))
    await socket.open()
    expires = jwt.decode(expiring, options={"verify_signature": False})["exp"]
    await asyncio.sleep(expires - time.time() + 1.0)  # syncd has closed: expiry + quiet period
    late = f"db|flag|{next(_ids)}"
    await socket.send(orjson.dumps({"id": late, "collection": collection, "method": "masterWrite",
                                    "params": [[{"newDocumentState": doc("late")}]]}).decode())
    assert await socket.read_until_closed() == []  # no answer on the closing socket
    assert socket.protocol.close_rcvd is not None and socket.protocol.close_rcvd.code == 4401

    async with websockets.connect(ws_url(jwt_server)) as ws:
        client = RxClient(ws)
        await ws.send(auth_message({"Authorization": f"Bearer {token()}"}))
        answer = await client.answer(late, within=5)
        assert answer["result"] is None and answer["error"]["code"] == "socket_closing"
    async with websockets.connect(ws_url(jwt_server)) as ws:  # another user: not theirs
        other = RxClient(ws)
        await ws.send(auth_message({"Authorization": f"Bearer {token(sub='mallory')}"}))
        assert "error" not in await other.call(collection, "masterChangesSince", None, 10)
        await other.quiet()
        assert late not in other.answers
    pulled = httpx.get(f"{jwt_server.url}/api/v1/sync/{collection}",
                       headers={"Authorization": f"Bearer {token()}"}).json()
    assert pulled["documents"] == []  # the late write was not carried out


@pytest.fixture()
def read_only(database_url: str) -> str:
    return register(database_url, TODO_SCHEMA, access={"write": {"scope": ["admin"]}})


@pytest.fixture()
def hidden(database_url: str) -> str:
    return register(database_url, TODO_SCHEMA, access={"read": {"scope": ["admin"]}})


async def test_forbidden_requests_are_answered_with_an_error_and_the_socket_stays(
    jwt_server: SyncdProcess, read_only: str, hidden: str
) -> None:
    async with websockets.connect(ws_url(jwt_server, f"?access_token={token()}")) as ws:
        client = RxClient(ws)
        write = await client.call(read_only, "masterWrite", [{"newDocumentState": doc("x")}])
        assert write["result"] is None and write["error"]["status"] == 403
        page = await client.call(hidden, "masterChangesSince", None, 10)
        assert page["result"] == {"documents": [], "checkpoint": None}
        assert page["error"]["status"] == 403
        assert "error" not in await client.call(read_only, "masterChangesSince", None, 10)
        await client.quiet()
        client.assert_each_answered_once()
