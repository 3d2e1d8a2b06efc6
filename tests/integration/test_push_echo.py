"""A push is answered only after the pusher's own live streams on the node were sent its changes.

RxDB holds stream events back while a push runs and then lets a held-back master state overwrite
the local document when it still equals what was last pushed; an echo of push n that comes after
the answer to push n rolls back edit n+1 and loses the next edit (issue #10). These tests check
the order on the wire, for every way in, and that a stuck stream cannot stall pushes.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.uri import parse_uri

from tests.support import SyncdProcess

Doc = dict[str, Any]


def doc(doc_id: str, n: int) -> Doc:
    return {"id": doc_id, "title": "t", "n": n, "_deleted": False}


class RawStream:
    """A native stream read without a background reader: after a push is answered, whatever
    the server wrote to this socket before the answer is already in the kernel's receive
    buffer (loopback delivers on write), so a non-blocking read shows exactly that."""

    def __init__(self, url: str) -> None:
        uri = parse_uri(url)
        self.protocol = ClientProtocol(uri)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=10)
        request = self.protocol.connect()
        self.protocol.send_request(request)
        self._flush()
        self.messages: list[str] = []
        while self.protocol.handshake_exc is None and self.protocol.state.name == "CONNECTING":
            self._feed(self.sock.recv(65536))
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc
        self.sock.setblocking(False)

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _feed(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode.name == "TEXT":
                self.messages.append(bytes(event.data).decode())
        self._flush()  # pongs

    def read_available(self) -> list[str]:
        """Every message already received, without waiting."""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            self._feed(data)
        taken, self.messages = self.messages, []
        return taken

    def read_until(self, predicate: Any, within: float = 10) -> list[str]:
        deadline = time.monotonic() + within
        seen: list[str] = []
        while time.monotonic() < deadline:
            seen += self.read_available()
            if any(predicate(m) for m in seen):
                return seen
            select.select([self.sock], [], [], 0.05)
        tail = [m[:100] for m in seen[-3:]]
        raise AssertionError(f"nothing matching arrived within {within}s; got {len(seen)} "
                             f"messages, the last ones begin {tail}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def raw_stream(syncd: SyncdProcess, collection: str) -> Iterator[RawStream]:
    url = syncd.url.replace("http://", "ws://") + f"/api/v1/sync/{collection}/stream"
    stream = RawStream(url)
    stream.read_until(lambda m: m == '"RESYNC"')
    yield stream
    stream.close()


def _holds(message: str, doc_id: str, n: int) -> bool:
    if message == '"RESYNC"':
        return False
    return any(d["id"] == doc_id and d.get("n") == n for d in orjson.loads(message)["documents"])


def edit_and_watch(
    http: httpx.Client, collection: str, stream: RawStream, edits: int
) -> tuple[list[int], list[int]]:
    """Push ``edits`` versions of one document, each from the previous one; after each answer,
    look whether the stream already holds its echo. Returns the edits whose echo came only after
    the answer, and the ``n`` of every version the stream delivered, in order."""
    late: list[int] = []
    delivered: list[int] = []
    previous = None
    for n in range(edits):
        current = doc("hot", n)
        pushed = http.post(f"/api/v1/sync/{collection}",
                           json=[{"assumedMasterState": previous, "newDocumentState": current}])
        assert pushed.status_code == 200 and pushed.json() == [], pushed.text
        arrived = stream.read_available()
        if not any(_holds(m, "hot", n) for m in arrived):
            late.append(n)
            arrived += stream.read_until(lambda m, n=n: _holds(m, "hot", n))
        delivered += [d["n"] for m in arrived if m != '"RESYNC"'
                      for d in orjson.loads(m)["documents"]]
        previous = current
    return late, delivered


def test_native_push_is_answered_after_its_echo_was_written(
    syncd: SyncdProcess, collection: str, raw_stream: RawStream
) -> None:
    with httpx.Client(base_url=syncd.url, timeout=30) as http:
        late, delivered = edit_and_watch(http, collection, raw_stream, 40)
    assert late == [], f"the stream carried these edits only after their push was answered: {late}"
    assert delivered == list(range(40))


async def test_rxdb_websocket_stream_frame_comes_before_the_write_answer(
    syncd: SyncdProcess, collection: str
) -> None:
    url = syncd.url.replace("http://", "ws://") + "/rxdb/ws"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(orjson.dumps({"id": "stream", "collection": collection,
                                    "method": "masterChangeStream$", "params": []}).decode())
        for _ in range(2):
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["result"] == "RESYNC"
        previous = None
        for n in range(40):
            current = doc("hot", n)
            request_id = f"w{n}"
            await ws.send(orjson.dumps({
                "id": request_id, "collection": collection, "method": "masterWrite",
                "params": [[{"assumedMasterState": previous, "newDocumentState": current}]],
            }).decode())
            echoed = False
            while True:
                message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["id"] == "stream":
                    result = message["result"]
                    echoed = echoed or (result != "RESYNC" and any(
                        d["id"] == "hot" and d["n"] == n for d in result["documents"]))
                    continue
                assert message == {"id": request_id, "collection": collection, "result": []}
                break
            assert echoed, f"edit {n}: the write was answered before the stream carried it"
            previous = current


def test_rxdb_server_event_stream_carries_the_echo_before_the_push_answer(
    syncd: SyncdProcess, collection: str
) -> None:
    """Server-Sent Events: the stream's chunk is written before the push's answer."""
    sock = socket.create_connection(("127.0.0.1", syncd.port), timeout=10)
    sock.sendall(f"GET /rxdb/{collection}/0/pullStream HTTP/1.1\r\nHost: x\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    received = b""
    while b"retry:" not in received:
        received += sock.recv(65536)
    sock.setblocking(False)
    try:
        with httpx.Client(base_url=syncd.url, timeout=30) as http:
            previous = None
            late = []
            for n in range(40):
                current = doc("hot", n)
                pushed = http.post(f"/rxdb/{collection}/0/push",
                                   json=[{"assumedMasterState": previous,
                                          "newDocumentState": current}])
                assert pushed.status_code == 200 and pushed.json() == [], pushed.text
                marker = f'"n": {n}'.encode()
                received += _available(sock)
                if marker not in received:
                    late.append(n)
                    deadline = time.monotonic() + 10
                    while marker not in received and time.monotonic() < deadline:
                        select.select([sock], [], [], 0.05)
                        received += _available(sock)
                received = received[received.rfind(marker) + len(marker):]
                previous = current
    finally:
        sock.close()
    assert late == [], f"the stream carried these edits only after their push was answered: {late}"


def _available(sock: socket.socket) -> bytes:
    """What a non-blocking socket has received already."""
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


def test_a_stuck_stream_of_the_pusher_does_not_stall_its_pushes(
    database_url: str, collection: str
) -> None:
    """A stream that stopped reading is told to resync after the bound, once; later pushes are
    not held up by it at all, and when it reads again it finds the RESYNC."""
    wait_ms = 300
    server = SyncdProcess(database_url, env={"SYNCD_PUSH_ECHO_WAIT_MS": str(wait_ms)})
    url = server.url.replace("http://", "ws://") + f"/api/v1/sync/{collection}/stream"
    stuck = RawStream(url)
    try:
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stuck.read_until(lambda m: m == '"RESYNC"')
        payload = "x" * 200_000
        durations = []
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(60):  # 12 MB: far beyond what the socket buffers hold
                started = time.monotonic()
                pushed = http.post(f"/api/v1/sync/{collection}", json=[
                    {"newDocumentState": {**doc(f"big-{i}", i), "payload": payload}}])
                durations.append(time.monotonic() - started)
                assert pushed.status_code == 200, pushed.text
        slow = [round(d, 3) for d in durations if d >= wait_ms / 1000]
        # Only the pushes that found the stream behind before it was marked lagging wait.
        assert len(slow) <= 2, f"pushes waited for a stuck stream: {slow}"
        assert max(durations) < wait_ms / 1000 + 5
        seen = stuck.read_until(lambda m: m == '"RESYNC"', within=30)
        assert '"RESYNC"' in seen
    finally:
        stuck.close()
        server.stop()


def test_across_nodes_the_echo_may_come_late_but_the_stream_misses_nothing(
    database_url: str, collection: str
) -> None:
    """Pushes through node A, the stream on node B: B learns of the change from A's batched
    NOTIFY (or its head poll), so the echo can arrive after the answer — which is why a client's
    HTTP and stream should reach the same node (docs/rxdb-compat.md). What must still hold:
    every edit reaches B's stream, in order, and B ends at syncd's final state."""
    node_a = SyncdProcess(database_url)
    node_b = SyncdProcess(database_url)
    url = node_b.url.replace("http://", "ws://") + f"/api/v1/sync/{collection}/stream"
    stream = RawStream(url)
    try:
        stream.read_until(lambda m: m == '"RESYNC"')
        with httpx.Client(base_url=node_a.url, timeout=30) as http:
            late, delivered = edit_and_watch(http, collection, stream, 30)
        print(f"echoes after the answer across nodes: {len(late)} of 30")
        assert delivered == list(range(30)), delivered
        final = httpx.get(f"{node_b.url}/api/v1/sync/{collection}").json()["documents"]
        assert final == [doc("hot", 29)]
    finally:
        stream.close()
        node_a.stop()
        node_b.stop()
