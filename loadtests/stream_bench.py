#!/usr/bin/env python3
"""Live delivery through real servers: latency, completeness, memory per subscriber.

Starts real ``python -m syncd serve`` processes on 127.0.0.1 against one PostgreSQL (migrated with
``syncd.db.migrate.upgrade``, collection ``benchdocs`` registered with ``python -m syncd
collections add … --schema loadtests/bench_schema.json``), opens subscribers from separate client
processes, waits until every one of them is subscribed, and then writes ~1 KB RxDB-shaped
documents (``loadtests/documents.py``) one at a time. Cells (``--tests``):

* **single** (one cell per ``--subscribers`` value, 100, 1,000 and 10,000 by default): one syncd
  node, websocket subscribers on ``WS /api/v1/sync/benchdocs/stream`` (ready at their
  ``"RESYNC"``), documents pushed through the native API (``POST /api/v1/sync/benchdocs``). The
  node's RSS is read before and after opening the subscribers (idle memory per subscriber =
  difference / subscribers).
* **sse**: the same against syncd's rxdb-server protocol: Server-Sent Events subscribers on
  ``GET /rxdb/benchdocs/0/pullStream``, documents pushed to ``POST /rxdb/benchdocs/0/push``.
* **peer**: the same load against RxDB's own Node server (``node loadtests/peer/server.mjs``:
  rxdb-server 15.22.0, rxdb 15.22.0, memory storage; install it once with ``npm ci --prefix
  loadtests/peer``), at ``…/benchdocs/0/pullStream`` and ``…/push``; its RSS and CPU likewise.
  An SSE stream gives no sign that it is subscribed (the peer even holds back its response
  headers until its first event), so SSE cells push marker documents until every stream got
  one before measuring. The report compares syncd's SSE p99 with the peer's at each count.
* **cluster**: ``--nodes`` (3) syncd nodes, ``--cluster-subscribers`` websocket subscribers
  spread round-robin over them; the documents are pushed to node 1 (its own subscribers are
  woken at once, the others by syncd's batched ``NOTIFY``). Then the same number of rows is
  written with plain SQL (``INSERT INTO syncd_documents …`` in autocommit; syncd finds them by
  its head poll). DESIGN.md's requirement for the SQL path: p99 ≤ 100 ms.

Latency of a (subscriber, document) pair = the subscriber's receipt of the frame carrying the
document - the moment the write was acknowledged (HTTP response received, or the SQL ``INSERT``
returned); both clocks are ``CLOCK_MONOTONIC`` of this machine. A frame may beat the HTTP response
(syncd wakes its feed before it answers), so latencies from the acknowledgement can be negative;
"p99 from send" is measured from the moment the request was sent instead (issue #6's "push sent →
frame received": the verdicts under the table use it). Writes are one at a time: the next write
waits until every subscriber received the previous one (at most ``--delivery-timeout`` s), plus a
random gap of ``--gap-ms`` (so writes do not keep step with the 25 ms head poll). Every
subscriber must receive every document: missing (subscriber, document) pairs, duplicates,
RESYNCs and dropped connections are counted and reported.

The load generator: subscribers are spread over ``ceil(S / --per-process)`` client processes (at
most ``--max-processes``), each with its own event loop (uvloop) and minimal protocol clients
(raw websocket and SSE parsers on asyncio protocols, no task per connection), so that the
clients, which share the machine's cores with the server, cost as little as possible per
message; the table shows the server's CPU share and the busiest client process's during the
writes, so a saturated client is visible. ``RLIMIT_NOFILE`` is raised to its hard limit here
and in every process started (the servers via ``preexec_fn``; 10,000 subscribers need about
10,200 descriptors in the server). ``SYNCD_*`` variables in the environment are passed on to the
syncd nodes (for instance ``SYNCD_STREAM_POLL_MS``), except the database URL, host and port.

Full-size run (defaults: 100, 1,000 and 10,000 subscribers for each of single, sse and peer; 1,000
over 3 nodes; 200 writes per cell; 3 runs), on the embedded PostgreSQL, or on a loopback server
of your own (the script creates a scratch database ``streambench_<token>`` there and drops it
afterwards); expect 20-40 minutes on 2 vCPUs, most of it opening the 10,000-subscriber cells::

    .venv/bin/python loadtests/stream_bench.py
    .venv/bin/python loadtests/stream_bench.py --database-url postgresql://u:p@127.0.0.1:5432/postgres

Issue #6's stream figures only (websocket at 100/1,000/10,000, syncd SSE vs the peer)::

    .venv/bin/python loadtests/stream_bench.py --tests single,sse,peer --pushes 100 --runs 3

Smoke test::

    .venv/bin/python loadtests/stream_bench.py --subscribers 100 --cluster-subscribers 30 \\
        --pushes 20 --runs 1

Everything started (syncd nodes, the peer, client processes, the embedded PostgreSQL in a
temporary directory) is stopped by PID when the script ends, also on Ctrl-C, SIGTERM or an
error; the servers also get SIGTERM if this process dies (``PR_SET_PDEATHSIG``). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import multiprocessing
import os
import pickle
import random
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import asyncpg
import benchkit
import documents
import httpx
import orjson
import psutil  # type: ignore[import-untyped]
from websockets.asyncio.client import connect

from syncd.db.urls import asyncpg_dsn

REPO = Path(__file__).resolve().parent.parent
SCHEMA = documents.SCHEMA_PATH
COLLECTION = "benchdocs"  # the peer (loadtests/peer/server.mjs) serves the same collection
RESYNC_TEXTS = frozenset({'"RESYNC"', "RESYNC"})
TESTS: tuple[str, ...] = ("single", "sse", "peer", "cluster")
# Single-node cells: what the subscribers speak, and to whom.
SINGLE_TESTS: tuple[str, ...] = ("single", "sse", "peer")
PEER_SCRIPT = REPO / "loadtests" / "peer" / "server.mjs"
# The plain-SQL writer: what another service writing straight into the table would do; syncd's
# trigger stamps the change order and adds `_deleted`.
SQL_INSERT = "INSERT INTO syncd_documents (collection_id, id, data) VALUES ($1, $2, $3::jsonb)"


# --- processes: limits, and stopping everything we started ----------------------------------------


class Server:
    """One server process on 127.0.0.1 that this benchmark started; its output goes to a log."""

    label = "server"

    def __init__(self, number: int, command: list[str], environment: dict[str, str],
                 log_path: Path) -> None:
        self.number = number
        self.log_path = log_path
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops the server
            preexec_fn=benchkit.child_preexec,
        )
        self._ps = psutil.Process(self.process.pid)

    def _tree(self) -> list[Any]:
        """The process and its children (uvicorn's worker processes with --workers > 1)."""
        try:
            return [self._ps, *self._ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [self._ps]

    def rss(self) -> int:
        return sum(int(p.memory_info().rss) for p in self._tree())

    def cpu_seconds(self) -> float:
        """CPU time of the process and its children; with several workers, divided by wall
        time it can exceed one core."""
        total = 0.0
        for process in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.label} {self.number} exited early:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def problems(self) -> list[str]:
        """ERROR/Traceback lines the server logged: worth a look after every cell."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in text if "ERROR" in line or "Traceback" in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM to this PID: both servers shut down gracefully
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                benchkit.progress(f"WARNING: {self.label} {self.number} (pid "
                                  f"{self.process.pid}) ignored SIGTERM; killing it")
                self.process.kill()
                self.process.wait(10)
        self._log.close()


class Node(Server):
    """One ``python -m syncd serve`` process on 127.0.0.1 (uvicorn runs in that very process)."""

    label = "syncd node"

    def __init__(self, number: int, database_url: str, log_dir: Path, workers: int = 1) -> None:
        self.port = benchkit.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            key: value for key, value in os.environ.items()
            if key not in ("SYNCD_HOST", "SYNCD_PORT", "SYNCD_WORKERS")
        }
        environment.update(SYNCD_DATABASE_URL=database_url)
        environment.setdefault("SYNCD_LOG_LEVEL", "warning")
        super().__init__(
            number,
            [sys.executable, "-m", "syncd", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers)],
            environment, log_dir / f"syncd-node{number}-{self.port}.log",
        )
        # The rxdb-server protocol's base URL (SYNCD_RXDB_SERVER_PREFIX, schema version 0).
        prefix = os.environ.get("SYNCD_RXDB_SERVER_PREFIX", "/rxdb")
        self.rxdb_url = f"{self.url}{prefix}/{COLLECTION}/0"

    def ws_url(self, collection: str) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/sync/{collection}/stream"

    async def wait_ready(self, http: httpx.AsyncClient, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                response = await http.get(self.url + "/readyz", timeout=2.0)
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"syncd node {self.number} not ready in {within:g}s:\n"
                           f"{self.log_tail()}")


class Peer(Server):
    """RxDB's own Node server (``node loadtests/peer/server.mjs``, rxdb-server 15.22.0, memory
    storage) serving the same collection through the same rxdb-server protocol."""

    label = "peer RxDB server"

    def __init__(self, number: int, log_dir: Path) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("the peer needs Node.js (`node` on PATH)")
        if not (PEER_SCRIPT.parent / "node_modules").is_dir():
            raise RuntimeError(f"the peer is not installed: npm ci --prefix {PEER_SCRIPT.parent}")
        self.port = benchkit.free_port()
        super().__init__(
            number, [node, str(PEER_SCRIPT), "--port", str(self.port)], dict(os.environ),
            log_dir / f"peer{number}-{self.port}.log",
        )
        self.rxdb_url = ""

    async def wait_ready(self, http: httpx.AsyncClient, within: float = 60.0) -> None:
        """Until it prints ``READY <url>`` (the URL replicateServer's ``url`` takes)."""
        del http
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self._check_alive()
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("READY "):
                    self.rxdb_url = line.split(None, 1)[1].strip().rstrip("/")
                    if not self.rxdb_url.startswith("http://127.0.0.1:"):
                        raise RuntimeError(f"the peer serves {self.rxdb_url}, not on loopback")
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"peer {self.number} not ready in {within:g}s:\n{self.log_tail()}")


@dataclass(slots=True)
class Launched:
    """Everything this benchmark started, so that every exit path can stop it by PID."""

    nodes: list[Server] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()
        for node in self.nodes:
            node.stop()
        self.workers.clear()
        self.nodes.clear()


# --- client processes: subscribers --------------------------------------------------------------
#
# The pipe between the benchmark and a client process is a ``multiprocessing.Pipe()`` (a Unix
# socketpair), but it is never read or written with ``Connection.recv``/``send``: watching its fd
# with the event loop (uvloop's ``add_reader`` is a libuv poll handle, which makes the fd
# O_NONBLOCK) turns ``Connection.recv`` of a message larger than what has arrived so far, and
# ``Connection.send`` of one larger than the socket buffer, into ``BlockingIOError`` mid-message —
# the large "result" message of a full-size run failed just so. Both ends instead wrap the socket
# in an asyncio stream (:class:`Channel`): length-prefixed pickles, reads that wait for the whole
# message, writes buffered by the transport.


class Channel:
    """Pickled messages over one end of a ``multiprocessing.Pipe()``, on the running event loop."""

    _HEADER = struct.Struct("!Q")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, conn: Connection) -> Channel:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        conn.close()  # the channel owns the socket from now on
        try:
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        return cls(reader, writer)

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue one message (never blocks; :meth:`drain` waits until it is written)."""
        if self._writer.is_closing():
            raise ConnectionResetError("channel closed")
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(self._HEADER.pack(len(payload)) + payload)

    async def drain(self) -> None:
        await self._writer.drain()

    async def recv(self) -> tuple[Any, ...]:
        """The next whole message; ``EOFError`` when the other end is gone."""
        try:
            header = await self._reader.readexactly(self._HEADER.size)
            (size,) = self._HEADER.unpack(header)
            payload = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            raise EOFError("channel closed") from error
        message: tuple[Any, ...] = pickle.loads(payload)
        return message

    def close(self) -> None:
        with contextlib.suppress(Exception):  # also after the event loop was closed
            self._writer.close()


# Parent → worker: ("phase", prefix, writes) → ("phased",); ("collect",) → ("result", {...});
# ("close",) → ("closed",). Worker → parent, unasked: ("ready", opened, failed, first error) once
# every subscriber got its RESYNC, and ("got", k) once all its live subscribers received write k.


class _Phase:
    def __init__(self, prefix: str, writes: int, subscribers: int) -> None:
        self.prefix = prefix
        self.writes = writes
        self.times = [array("d", [math.nan]) * writes for _ in range(subscribers)]
        self.counts = [0] * writes
        self.reported = [False] * writes
        self.duplicates = 0
        self.resyncs = 0
        self.closed = 0
        self.cpu = time.process_time()
        self.wall = time.monotonic()


class _WorkerState:
    def __init__(self, channel: Channel, subscribers: int) -> None:
        self.channel = channel
        self.sockets: list[WsStream | SseStream | None] = [None] * subscribers
        self.all_lost = asyncio.Event()  # set once every opened stream is gone
        self.live = 0
        self.closing = False
        self.phase: _Phase | None = None
        # Which subscribers received a message (SSE streams are ready once one arrived).
        self.seen = bytearray(subscribers)

    def received(self, index: int, message: str | bytes, now: float) -> None:
        text = message.decode() if isinstance(message, bytes) else message
        self.seen[index] = 1
        phase = self.phase
        if text in RESYNC_TEXTS:
            if phase is not None:
                phase.resyncs += 1
            return
        if phase is None:
            return
        body = orjson.loads(text)
        row = phase.times[index]
        for doc in body.get("documents", ()):
            doc_id = doc.get("id") if isinstance(doc, dict) else None
            if not isinstance(doc_id, str) or not doc_id.startswith(phase.prefix):
                continue  # a warm-up document, or one of another phase
            k = int(doc_id[len(phase.prefix):])
            if not 0 <= k < phase.writes:
                continue
            if not math.isnan(row[k]):
                phase.duplicates += 1
                continue
            row[k] = now
            phase.counts[k] += 1
            self._check(k)

    def lost(self) -> None:
        self.live -= 1
        if self.live <= 0:
            self.all_lost.set()
        phase = self.phase
        if phase is None or self.closing:
            return
        phase.closed += 1
        for k in range(phase.writes):
            self._check(k)

    def _check(self, k: int) -> None:
        phase = self.phase
        if phase is not None and not phase.reported[k] and phase.counts[k] >= self.live:
            phase.reported[k] = True
            self.channel.send(("got", k))


async def _subscribe(
    state: _WorkerState, index: int, url: str, gate: asyncio.Semaphore, within: float
) -> None:
    def on_message(text: str) -> None:
        state.received(index, text, time.monotonic())

    def on_lost() -> None:
        if state.sockets[index] is not None:  # counted as open: it was live
            state.lost()

    async with gate:
        ws = await asyncio.wait_for(open_ws(url, on_message, on_lost), within)
        try:
            first = await asyncio.wait_for(ws.first, within)
        except BaseException:
            ws.abort()
            raise
        if first not in RESYNC_TEXTS:
            ws.abort()
            raise RuntimeError(f"first message was {first[:80]!r}, not RESYNC")
    state.sockets[index] = ws
    state.live += 1


class WsStream(asyncio.Protocol):
    """One websocket subscriber over a raw connection: the handshake, unmasked server frames
    parsed in place, pings answered. A load generator as cheap per message as ``SseStream``
    (the websockets library's task and parser per connection cost the clients more CPU than
    the server spends on the frame, and the clients share this machine's cores)."""

    def __init__(self, url: str, on_message: Callable[[str], None],
                 on_lost: Callable[[], None]) -> None:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._on_message = on_message
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._upgraded = False
        self.first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first.done():
            self.first.set_exception(ConnectionResetError("closed before its first message"))
        self._on_lost()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[:end]).split(b"\r\n", 1)[0]
            del self._buffer[:end + 4]
            if b" 101 " not in status + b" ":
                if not self.first.done():
                    self.first.set_exception(RuntimeError(f"handshake refused: {status!r}"))
                self.abort()
                return
            self._upgraded = True
        while (frame := self._next_frame()) is not None:
            self._handle(*frame)

    def _next_frame(self) -> tuple[int, bool, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        size, start = buffer[1] & 0x7F, 2
        if size == 126:
            if len(buffer) < 4:
                return None
            size, start = struct.unpack_from("!H", buffer, 2)[0], 4
        elif size == 127:
            if len(buffer) < 10:
                return None
            size, start = struct.unpack_from("!Q", buffer, 2)[0], 10
        if len(buffer) < start + size:
            return None
        opcode, fin = buffer[0] & 0x0F, bool(buffer[0] & 0x80)
        payload = bytes(buffer[start:start + size])
        del buffer[:start + size]
        return opcode, fin, payload

    def _handle(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode in (0x0, 0x1, 0x2):  # continuation, text, binary
            self._fragments.append(payload)
            if fin:
                text = b"".join(self._fragments).decode()
                self._fragments.clear()
                if self.first.done():
                    self._on_message(text)
                else:
                    self.first.set_result(text)
        elif opcode == 0x9:  # ping: a pong with the same payload (masked with a zero key)
            self._send(0xA, payload)
        elif opcode == 0x8:  # close: echo it, then hang up
            self._send(0x8, payload[:2])
            if self.transport is not None:
                self.transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0"
                                 + payload)

    def close(self) -> None:
        """A close frame (1000), then the connection ends when the server echoes it."""
        self._send(0x8, struct.pack("!H", 1000))


P = TypeVar("P", bound=asyncio.Protocol)


async def _connect(url: str, protocol: Callable[[], P]) -> P:
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"not a scheme://host:port/ URL: {url}")
    _, stream = await asyncio.get_running_loop().create_connection(
        protocol, parts.hostname, parts.port
    )
    return stream


async def open_ws(
    url: str, on_message: Callable[[str], None], on_lost: Callable[[], None]
) -> WsStream:
    return await _connect(url, lambda: WsStream(url, on_message, on_lost))


class SseStream(asyncio.Protocol):
    """One Server-Sent Events subscriber over a raw HTTP/1.1 connection: cheap enough for
    thousands per client process. Decodes a chunked body and hands each event's data (its
    ``data:`` lines joined with newlines) to ``on_event``; comments and ``retry:`` are skipped."""

    def __init__(self, url: str, on_event: Callable[[str], None],
                 on_lost: Callable[[], None]) -> None:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n\r\n"
        ).encode()
        self._on_event = on_event
        self._on_lost = on_lost
        self._raw = bytearray()  # received, not yet de-chunked
        self._body = bytearray()  # de-chunked, not yet split into events
        self._head_done = False
        self._chunked = False
        self.transport: asyncio.Transport | None = None
        self.failure: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()

    def data_received(self, data: bytes) -> None:
        self._raw += data
        if not self._head_done and not self._read_head():
            return
        if self._chunked:
            self._dechunk()
        else:
            self._body += self._raw
            self._raw.clear()
        self._split_events()

    def _read_head(self) -> bool:
        end = self._raw.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._raw[:end]).decode("latin-1")
        del self._raw[:end + 4]
        status = head.split("\r\n", 1)[0]
        if " 200 " not in f"{status} ":
            self.failure = status
            if self.transport is not None:
                self.transport.close()
            return False
        self._head_done = True
        self._chunked = "transfer-encoding: chunked" in head.lower()
        return True

    def _dechunk(self) -> None:
        raw = self._raw
        while True:
            line_end = raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(raw[:line_end]).split(b";", 1)[0], 16)
            if len(raw) < line_end + 2 + size + 2:
                return
            self._body += raw[line_end + 2:line_end + 2 + size]
            del raw[:line_end + 2 + size + 2]
            if size == 0 and self.transport is not None:  # the server ended the stream
                self.transport.close()
                return

    def _split_events(self) -> None:
        body = self._body
        while (end := body.find(b"\n\n")) >= 0:
            lines = bytes(body[:end]).decode().split("\n")
            del body[:end + 2]
            data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
            if data:
                self._on_event("\n".join(data))


async def open_sse(
    url: str, on_event: Callable[[str], None], on_lost: Callable[[], None]
) -> SseStream:
    return await _connect(url, lambda: SseStream(url, on_event, on_lost))


async def _subscribe_sse(
    state: _WorkerState, index: int, url: str, gate: asyncio.Semaphore, within: float
) -> None:
    """Open the stream; it counts as ready once its first event arrives (``seen``): the peer
    sends its response headers only with its first event."""

    def on_event(text: str) -> None:
        state.received(index, text, time.monotonic())

    async with gate:
        stream = await asyncio.wait_for(open_sse(url, on_event, state.lost), within)
    state.sockets[index] = stream
    state.live += 1


async def _worker(
    pipe: Connection, urls: list[str], concurrency: int, open_timeout: float, kind: str
) -> None:
    channel = await Channel.open(pipe)
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    async def receive() -> None:
        try:
            while True:
                inbox.put_nowait(await channel.recv())
        except (EOFError, OSError):  # the benchmark is gone: close and exit
            inbox.put_nowait(("close",))

    receiver = asyncio.create_task(receive())
    state = _WorkerState(channel, len(urls))
    gate = asyncio.Semaphore(concurrency)
    subscribe = _subscribe_sse if kind == "sse" else _subscribe
    outcomes = await asyncio.gather(
        *(subscribe(state, i, url, gate, open_timeout) for i, url in enumerate(urls)),
        return_exceptions=True,
    )
    errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    channel.send(("ready", len(urls) - len(errors), len(errors), errors[0] if errors else ""))
    while True:
        command = await inbox.get()
        if command[0] == "seen":
            channel.send(("seen", sum(state.seen)))
        elif command[0] == "phase":
            state.phase = _Phase(command[1], command[2], len(urls))
            channel.send(("phased",))
        elif command[0] == "collect":
            phase = state.phase
            state.phase = None
            if phase is None:
                channel.send(("result", None))
                continue
            channel.send(("result", {
                "times": [row.tobytes() for row in phase.times],
                "opened": [ws is not None for ws in state.sockets],
                "duplicates": phase.duplicates,
                "resyncs": phase.resyncs,
                "closed": phase.closed,
                "cpu": (time.process_time() - phase.cpu) / (time.monotonic() - phase.wall),
            }))
            await channel.drain()
        elif command[0] == "close":
            state.closing = True
            await _close_all(state)
            with contextlib.suppress(OSError):
                channel.send(("closed",))
                await channel.drain()
            receiver.cancel()
            channel.close()
            return


async def _close_all(state: _WorkerState) -> None:
    """Websockets close with a close frame (the server's relay ends as for a leaving client),
    SSE streams by hanging up; whatever is still open 5 s later is aborted."""
    sockets = [ws for ws in state.sockets if ws is not None]
    for ws in sockets:
        if isinstance(ws, WsStream):
            ws.close()
        elif ws.transport is not None:
            ws.transport.close()
    if state.live > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.all_lost.wait(), 5)
    for ws in sockets:
        if ws.transport is not None:
            ws.transport.abort()


def worker_main(
    pipe: Connection, urls: list[str], concurrency: int, open_timeout: float, kind: str
) -> None:
    """Entry point of a client process (spawned: a fresh interpreter, no inherited loop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops us on Ctrl-C
    benchkit.raise_nofile_limit()
    benchkit.run(_worker(pipe, urls, concurrency, open_timeout, kind))


class Worker:
    """The benchmark's handle on one client process."""

    def __init__(
        self, number: int, urls: list[str], options: Options, launched: Launched, kind: str
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.number = number
        self.size = len(urls)
        self.pipe, child = context.Pipe()
        self.process: SpawnProcess = context.Process(
            target=worker_main,
            args=(child, urls, options.connect_concurrency, options.open_timeout, kind),
            name=f"stream-bench-client-{number}",
            daemon=True,
        )
        launched.workers.append(self)
        self.process.start()
        child.close()
        self.replies: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.on_got: Callable[[int], None] = lambda _k: None
        self.channel: Channel | None = None
        self._receiver: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Open this end of the pipe on the event loop and start dispatching what arrives."""
        if self.channel is None:
            self.channel = await Channel.open(self.pipe)
            self._receiver = asyncio.create_task(self._receive(self.channel))

    async def _receive(self, channel: Channel) -> None:
        try:
            while True:
                message = await channel.recv()
                if message[0] == "got":
                    self.on_got(message[1])
                else:
                    self.replies.put_nowait(message)
        except (EOFError, OSError) as error:
            self.replies.put_nowait(("dead", repr(error)))

    def send(self, *message: Any) -> None:
        if self.channel is None:
            raise ConnectionResetError(f"client process {self.number}: pipe not open")
        self.channel.send(message)

    async def reply(self, kind: str, within: float) -> tuple[Any, ...]:
        try:
            message = await asyncio.wait_for(self.replies.get(), within)
        except TimeoutError:
            raise RuntimeError(f"client process {self.number} sent no {kind!r} within "
                               f"{within:g}s") from None
        if message[0] != kind:
            detail = f" ({message[1]})" if message[0] == "dead" and len(message) > 1 else ""
            raise RuntimeError(f"client process {self.number} (exit code "
                               f"{self.process.exitcode}) sent {message[0]!r}{detail}, "
                               f"expected {kind!r}")
        return message

    def stop(self) -> None:
        if self._receiver is not None:
            with contextlib.suppress(Exception):  # also after the event loop was closed
                self._receiver.cancel()
        if self.process.is_alive():
            self.process.terminate()  # SIGTERM to this PID
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
        if self.channel is not None:
            self.channel.close()
        self.pipe.close()  # a no-op once the channel took the socket over


class Clients:
    """``len(urls)`` subscribers spread over client processes; subscriber i uses ``urls[i]``;
    ``kind`` is ``ws`` (websocket streams) or ``sse`` (Server-Sent Events streams)."""

    def __init__(
        self, urls: list[str], options: Options, launched: Launched, kind: str = "ws"
    ) -> None:
        count = min(options.max_processes, math.ceil(len(urls) / options.per_process))
        count = max(1, min(count, len(urls)))
        # Contiguous slices, so that worker results concatenate back into subscriber order.
        bounds = [round(i * len(urls) / count) for i in range(count + 1)]
        self.workers = [
            Worker(i, urls[bounds[i]:bounds[i + 1]], options, launched, kind)
            for i in range(count)
        ]
        self._launched = launched

    async def wait_open(self, within: float) -> tuple[int, int, str]:
        await asyncio.gather(*(w.connect() for w in self.workers))
        replies = await asyncio.gather(*(w.reply("ready", within) for w in self.workers))
        opened = sum(r[1] for r in replies)
        failed = sum(r[2] for r in replies)
        error = next((r[3] for r in replies if r[3]), "")
        return opened, failed, error

    async def seen(self) -> int:
        """How many subscribers received at least one message so far."""
        for worker in self.workers:
            worker.send("seen")
        replies = await asyncio.gather(*(w.reply("seen", 30) for w in self.workers))
        return sum(r[1] for r in replies)

    async def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.send("close")
        with contextlib.suppress(RuntimeError):
            await asyncio.gather(*(w.reply("closed", 30) for w in self.workers))
        for worker in self.workers:
            worker.stop()
            if worker in self._launched.workers:
                self._launched.workers.remove(worker)


# --- one phase: writes one at a time, every subscriber's receipt of each --------------------------


@dataclass(slots=True)
class PhaseData:
    sent: list[float]
    acked: list[float]
    times: list[array[float]]  # per subscriber (in subscriber order): receipt of write k
    opened: list[bool]
    duplicates: int
    resyncs: int
    closed: int
    client_cpu: float  # the busiest client process: CPU time / wall time
    timeouts: int  # writes not delivered to everyone within --delivery-timeout
    seconds: float


Write = Callable[[str], Awaitable[None]]  # writes the document with this id, returns once acked


async def run_phase(clients: Clients, prefix: str, write: Write, options: Options) -> PhaseData:
    writes = options.pushes
    workers = clients.workers
    got = [0] * writes
    delivered = [asyncio.Event() for _ in range(writes)]

    def counter(k: int) -> None:
        if 0 <= k < writes:
            got[k] += 1
            if got[k] >= len(workers):
                delivered[k].set()

    for worker in workers:
        worker.on_got = counter
        worker.send("phase", prefix, writes)
    await asyncio.gather(*(w.reply("phased", 30) for w in workers))
    rng = random.Random(prefix)
    sent, acked = [0.0] * writes, [0.0] * writes
    timeouts = 0
    started = time.monotonic()
    for k in range(writes):
        sent[k] = time.monotonic()
        await asyncio.wait_for(write(f"{prefix}{k:05d}"), 30)
        acked[k] = time.monotonic()
        try:
            await asyncio.wait_for(delivered[k].wait(), options.delivery_timeout)
        except TimeoutError:
            timeouts += 1
        await asyncio.sleep(rng.uniform(options.gap_min_ms, options.gap_max_ms) / 1000)
    seconds = time.monotonic() - started
    if timeouts:
        await asyncio.sleep(1.0)  # one last chance for late frames
    for worker in workers:
        worker.send("collect")
    results = [(await w.reply("result", 120))[1] for w in workers]
    times: list[array[float]] = []
    opened: list[bool] = []
    for result in results:
        for raw in result["times"]:
            row = array("d")
            row.frombytes(raw)
            times.append(row)
        opened += result["opened"]
    return PhaseData(
        sent=sent, acked=acked, times=times, opened=opened,
        duplicates=sum(r["duplicates"] for r in results),
        resyncs=sum(r["resyncs"] for r in results),
        closed=sum(r["closed"] for r in results),
        client_cpu=max(r["cpu"] for r in results),
        timeouts=timeouts,
        seconds=seconds,
    )


@dataclass(frozen=True, slots=True)
class Latency:
    p50_ms: float
    p99_ms: float
    max_ms: float
    p50_send_ms: float  # from the moment the write was sent
    p99_send_ms: float
    pairs: int  # (subscriber, write) pairs expected
    missing: int


def latency(data: PhaseData, include: Callable[[int], bool] = lambda _s: True) -> Latency:
    from_ack: list[float] = []
    from_send: list[float] = []
    pairs = missing = 0
    for subscriber, row in enumerate(data.times):
        if not data.opened[subscriber] or not include(subscriber):
            continue
        for k, received in enumerate(row):
            pairs += 1
            if math.isnan(received):
                missing += 1
                continue
            from_ack.append(received - data.acked[k])
            from_send.append(received - data.sent[k])
    from_ack.sort()
    from_send.sort()
    return Latency(
        p50_ms=_percentile(from_ack, 0.50) * 1000,
        p99_ms=_percentile(from_ack, 0.99) * 1000,
        max_ms=(from_ack[-1] if from_ack else math.nan) * 1000,
        p50_send_ms=_percentile(from_send, 0.50) * 1000,
        p99_send_ms=_percentile(from_send, 0.99) * 1000,
        pairs=pairs,
        missing=missing,
    )


def _percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- writers --------------------------------------------------------------------------------------


def _document(doc_id: str) -> dict[str, Any]:
    return documents.document(doc_id)


def _poster(http: httpx.AsyncClient, url: str, what: str) -> Write:
    """Pushes one new document per write as ``[{newDocumentState}]`` (both APIs take it)."""

    async def write(doc_id: str) -> None:
        body = orjson.dumps([{"newDocumentState": _document(doc_id)}])
        response = await http.post(url, content=body,
                                   headers={"content-type": "application/json"})
        if response.status_code != 200 or response.content.strip() != b"[]":
            raise RuntimeError(f"push of {doc_id} to {what}: "
                               f"{response.status_code} {response.text[:200]}")

    return write


def http_writer(http: httpx.AsyncClient, node: Node) -> Write:
    """Through syncd's native API."""
    return _poster(http, f"{node.url}/api/v1/sync/{COLLECTION}", f"node {node.number}")


def rxdb_writer(http: httpx.AsyncClient, server: Node | Peer) -> Write:
    """Through the rxdb-server protocol's ``…/push`` (syncd's /rxdb/… or the peer's)."""
    return _poster(http, f"{server.rxdb_url}/push", server.label)


def sql_writer(conn: Any, collection_id: Any) -> Write:
    async def write(doc_id: str) -> None:
        await conn.execute(SQL_INSERT, collection_id, doc_id, orjson.dumps(_document(doc_id))
                           .decode())

    return write


async def warm_up(http: httpx.AsyncClient, subscribe_to: Node, push_to: Node, tag: str) -> None:
    """One subscriber, one push, its frame: the path works and its code is loaded."""
    async with connect(subscribe_to.ws_url(COLLECTION), open_timeout=10,
                       ping_interval=None, compression=None) as ws:
        first = await asyncio.wait_for(ws.recv(), 10)
        if first not in RESYNC_TEXTS:
            raise RuntimeError(f"node {subscribe_to.number}: first message {str(first)[:80]!r}")
        doc_id = f"warm-{tag}"
        await http_writer(http, push_to)(doc_id)
        deadline = time.monotonic() + 10
        while True:
            message = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            text = message.decode() if isinstance(message, bytes) else message
            if text not in RESYNC_TEXTS and any(
                d.get("id") == doc_id for d in orjson.loads(text).get("documents", ())
            ):
                return


async def warm_up_sse(server: Node | Peer, write: Write, tag: str) -> None:
    """One SSE subscriber, one push, its event: the path works and its code is loaded."""
    events: asyncio.Queue[str] = asyncio.Queue()
    url = f"{server.rxdb_url}/pullStream"
    stream = await asyncio.wait_for(open_sse(url, events.put_nowait, lambda: None), 10)
    try:
        doc_id = f"warm-{tag}"
        deadline = time.monotonic() + 10
        await asyncio.sleep(0.2)  # the peer subscribes after an await of its own
        await write(doc_id)
        while True:
            text = await asyncio.wait_for(events.get(), max(0.1, deadline - time.monotonic()))
            if text not in RESYNC_TEXTS and any(
                d.get("id") == doc_id for d in orjson.loads(text).get("documents", ())
            ):
                return
    except TimeoutError:
        raise RuntimeError(f"{server.label}: no event on {url} ({stream.failure or 'open'})"
                           ) from None
    finally:
        if stream.transport is not None:
            stream.transport.abort()


async def wait_all_seen(clients: Clients, write: Write, prefix: str, opened: int,
                        within: float) -> None:
    """SSE streams give no sign that they are subscribed before their first event (the peer
    even holds back its response headers): push marker documents until every stream got one."""
    deadline = time.monotonic() + within
    for k in range(100_000):
        await write(f"{prefix}{k:05d}")
        await asyncio.sleep(0.5)
        seen = await clients.seen()
        if seen >= opened:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {seen} of {opened} SSE streams received an event in "
                               f"{within:g}s")


# --- cells ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SingleOutcome:
    test: str
    subscribers: int
    processes: int
    opened: int
    failed: int
    bytes_per_subscriber: float
    latency: Latency
    data: PhaseData
    syncd_cpu: float


@dataclass(frozen=True, slots=True)
class ClusterOutcome:
    subscribers: int
    opened: int
    failed: int
    local: Latency  # HTTP push to node 1 → node 1's subscribers
    remote: Latency  # → the other nodes' subscribers
    sql: Latency  # plain SQL → every node's subscribers
    sql_per_node_p99_ms: list[float]
    http_data: PhaseData
    sql_data: PhaseData
    syncd_cpu: float  # busiest node during the HTTP phase


@dataclass(frozen=True, slots=True)
class Bench:
    url: str  # the migrated database syncd serves
    collection_id: Any
    log_dir: Path
    token: str


def _check_open(opened: int, failed: int, error: str, wanted: int) -> None:
    if failed:
        benchkit.progress(f"WARNING: {failed} of {wanted} subscribers did not open: {error}")
    if opened == 0:
        raise RuntimeError(f"no subscriber could open its stream: {error}")


def _check_logs(nodes: Sequence[Server]) -> None:
    for node in nodes:
        problems = node.problems()
        if problems:
            benchkit.progress(
                f"WARNING: {node.label} {node.number} logged {len(problems)} error line(s), "
                f"e.g. {problems[0][:300]} (log: {node.log_path})"
            )


async def single_cell(
    bench: Bench, http: httpx.AsyncClient, test: str, subscribers: int, run: int,
    options: Options, launched: Launched,
) -> SingleOutcome:
    """One server, ``subscribers`` streams: syncd's websocket (``single``), syncd's SSE
    ``pullStream`` (``sse``) or the peer's (``peer``)."""
    server: Node | Peer = (
        Peer(1, bench.log_dir) if test == "peer"
        else Node(1, bench.url, bench.log_dir, options.workers)
    )
    launched.nodes.append(server)
    try:
        await server.wait_ready(http)
        tag = f"{test}{subscribers}r{run}{bench.token}"
        if isinstance(server, Node) and test == "single":
            kind, write = "ws", http_writer(http, server)
            urls = [server.ws_url(COLLECTION)] * subscribers
            await warm_up(http, server, server, tag)
        else:
            kind, write = "sse", rxdb_writer(http, server)
            urls = [f"{server.rxdb_url}/pullStream"] * subscribers
            await warm_up_sse(server, write, tag)
        await asyncio.sleep(options.settle)
        rss_before = server.rss()
        clients = Clients(urls, options, launched, kind)
        try:
            opened, failed, error = await clients.wait_open(options.connect_timeout)
            _check_open(opened, failed, error, subscribers)
            if kind == "sse":
                await wait_all_seen(clients, write, f"{tag}-b-", opened, options.connect_timeout)
            await asyncio.sleep(options.settle)
            rss_after = server.rss()
            cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
            data = await run_phase(clients, f"{tag}-h-", write, options)
            cpu = (server.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
        finally:
            await clients.close()
        _check_logs([server])
        return SingleOutcome(
            test=test, subscribers=subscribers, processes=len(clients.workers), opened=opened,
            failed=failed, bytes_per_subscriber=(rss_after - rss_before) / opened,
            latency=latency(data), data=data, syncd_cpu=cpu,
        )
    finally:
        server.stop()
        launched.nodes.remove(server)


async def cluster_cell(
    bench: Bench, http: httpx.AsyncClient, run: int, options: Options, launched: Launched
) -> ClusterOutcome:
    nodes = [Node(n + 1, bench.url, bench.log_dir) for n in range(options.nodes)]
    launched.nodes.extend(nodes)
    sql_conn = None
    try:
        await asyncio.gather(*(node.wait_ready(http) for node in nodes))
        tag = f"c{run}{bench.token}"
        for node in nodes:
            await warm_up(http, node, nodes[0], f"{tag}n{node.number}")
        count = options.cluster_subscribers
        node_of = [s % len(nodes) for s in range(count)]
        clients = Clients([nodes[n].ws_url(COLLECTION) for n in node_of], options, launched)
        try:
            opened, failed, error = await clients.wait_open(options.connect_timeout)
            _check_open(opened, failed, error, count)
            await asyncio.sleep(options.settle)
            cpu_before = [node.cpu_seconds() for node in nodes]
            wall_before = time.monotonic()
            http_data = await run_phase(clients, f"{tag}-h-", http_writer(http, nodes[0]),
                                        options)
            wall = time.monotonic() - wall_before
            cpu = max((node.cpu_seconds() - before) / wall
                      for node, before in zip(nodes, cpu_before, strict=True))
            sql_conn = await asyncpg.connect(
                asyncpg_dsn(bench.url), server_settings={"application_name": "stream_bench"}
            )
            sql_data = await run_phase(clients, f"{tag}-q-",
                                       sql_writer(sql_conn, bench.collection_id), options)
        finally:
            await clients.close()
        _check_logs(nodes)
        return ClusterOutcome(
            subscribers=count, opened=opened, failed=failed,
            local=latency(http_data, lambda s: node_of[s] == 0),
            remote=latency(http_data, lambda s: node_of[s] != 0),
            sql=latency(sql_data),
            sql_per_node_p99_ms=[
                latency(sql_data, _on_node(node_of, n)).p99_ms for n in range(len(nodes))
            ],
            http_data=http_data, sql_data=sql_data, syncd_cpu=cpu,
        )
    finally:
        if sql_conn is not None:
            await sql_conn.close()
        for node in nodes:
            node.stop()
            launched.nodes.remove(node)


def _on_node(node_of: Sequence[int], node: int) -> Callable[[int], bool]:
    return lambda subscriber: node_of[subscriber] == node


@dataclass(slots=True)
class Results:
    single: dict[tuple[str, int], list[SingleOutcome]] = field(default_factory=dict)
    cluster: list[ClusterOutcome] = field(default_factory=list)


def _describe(lat: Latency) -> str:
    return (f"p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, max {lat.max_ms:.1f} ms, "
            f"missing {lat.missing}/{lat.pairs}")


def _single_cells(options: Options) -> list[tuple[str, int]]:
    """(test, subscribers) of the single-server cells, each count for every transport in turn,
    so that a like-for-like pair runs close together in time (on a machine with neighbours)."""
    tests = [test for test in SINGLE_TESTS if test in options.tests]
    return [(test, count) for count in options.subscribers for test in tests]


async def run_all(bench: Bench, options: Options, launched: Launched) -> Results:
    results = Results()
    async with httpx.AsyncClient(timeout=30.0) as http:
        for run in range(options.runs):
            for test, subscribers in _single_cells(options):
                started = time.monotonic()
                outcome = await single_cell(bench, http, test, subscribers, run, options,
                                            launched)
                results.single.setdefault((test, subscribers), []).append(outcome)
                data = outcome.data
                benchkit.progress(
                    f"run {run + 1}/{options.runs} {test} S={subscribers} "
                    f"({outcome.processes} client processes): {_describe(outcome.latency)}, "
                    f"resyncs {data.resyncs}, closed {data.closed}, duplicates "
                    f"{data.duplicates}, timeouts {data.timeouts}, "
                    f"{outcome.bytes_per_subscriber / 1024:.1f} KiB/subscriber, server CPU "
                    f"{outcome.syncd_cpu:.0%}, busiest client CPU {data.client_cpu:.0%} "
                    f"[{time.monotonic() - started:.1f}s]"
                )
            if "cluster" in options.tests:
                started = time.monotonic()
                cluster = await cluster_cell(bench, http, run, options, launched)
                results.cluster.append(cluster)
                benchkit.progress(
                    f"run {run + 1}/{options.runs} cluster {options.nodes} nodes "
                    f"S={cluster.subscribers}: local {_describe(cluster.local)}; remote "
                    f"{_describe(cluster.remote)}; SQL {_describe(cluster.sql)} (per node p99 "
                    f"{', '.join(f'{v:.1f}' for v in cluster.sql_per_node_p99_ms)} ms); "
                    f"resyncs {cluster.http_data.resyncs + cluster.sql_data.resyncs}, "
                    f"closed {cluster.http_data.closed + cluster.sql_data.closed}, timeouts "
                    f"{cluster.http_data.timeouts + cluster.sql_data.timeouts} "
                    f"[{time.monotonic() - started:.1f}s]"
                )
    return results


# --- the report -----------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(statistics.median(finite)) if finite else math.nan


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def _missing(latencies: Sequence[Latency]) -> str:
    missing = sum(lat.missing for lat in latencies)
    pairs = sum(lat.pairs for lat in latencies)
    return f"{missing:,} of {pairs:,}"


def _latency_cells(latencies: Sequence[Latency]) -> list[str]:
    return [
        _ms(_median([lat.p50_ms for lat in latencies])),
        _ms(_median([lat.p99_ms for lat in latencies])),
        _ms(max(lat.max_ms for lat in latencies)),
        _ms(_median([lat.p50_send_ms for lat in latencies])),
        _ms(_median([lat.p99_send_ms for lat in latencies])),
        _missing(latencies),
    ]


STREAMS = {
    "single": "syncd websocket (push: native API)",
    "sse": "syncd SSE pullStream (push: /rxdb/…/push)",
    "peer": "RxDB Node server SSE (push: …/push)",
}
# Issue #6's live-delivery targets for one syncd node: p99 by subscriber count.
P99_TARGETS_MS = {1000: 50.0, 10_000: 250.0}


def _single_table(results: Results, options: Options) -> list[str]:
    lines = [
        f"**One server (syncd: {options.workers} uvicorn worker(s)): {options.pushes} pushes "
        "(1 document of ~1 KB each), one at a time**",
        "",
        "| stream | subscribers | client processes | p50 ms | p99 ms | max ms | p50 from send ms "
        "| p99 from send ms "
        "| missing (subscriber, doc) | RESYNCs / closed / duplicates | idle KiB per subscriber "
        "| server CPU | busiest client CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {test: n for n, test in enumerate(SINGLE_TESTS)}
    for (test, subscribers), outcomes in sorted(
        results.single.items(), key=lambda item: (order[item[0][0]], item[0][1])
    ):
        failed = sum(o.failed for o in outcomes)
        extra = (
            f"{sum(o.data.resyncs for o in outcomes)} / {sum(o.data.closed for o in outcomes)}"
            f" / {sum(o.data.duplicates for o in outcomes)}"
        )
        lines.append(
            "| " + " | ".join([
                STREAMS[test],
                f"{subscribers:,}" + (f" ({failed} failed to open)" if failed else ""),
                str(outcomes[0].processes),
                *_latency_cells([o.latency for o in outcomes]),
                extra,
                f"{_median([o.bytes_per_subscriber / 1024 for o in outcomes]):.1f}",
                f"{_median([o.syncd_cpu for o in outcomes]):.0%}",
                f"{_median([o.data.client_cpu for o in outcomes]):.0%}",
            ]) + " |"
        )
    lines.append("")
    lines += _verdicts(results)
    return lines


def _p99(results: Results, test: str, subscribers: int) -> float:
    """Median p99 from the moment the push was sent (issue #6's measure: push sent → frame
    received), which charges each server for its push handling too."""
    outcomes = results.single.get((test, subscribers), [])
    return _median([o.latency.p99_send_ms for o in outcomes])


def _verdicts(results: Results) -> list[str]:
    """The targets: websocket p99 at 1,000 and 10,000 subscribers with every frame delivered,
    and syncd's SSE p99 against the peer's at the same count."""
    lines: list[str] = []
    for subscribers, target in P99_TARGETS_MS.items():
        outcomes = results.single.get(("single", subscribers))
        if not outcomes:
            continue
        p99 = _p99(results, "single", subscribers)
        complete = all(o.latency.missing == 0 and o.data.resyncs == 0 for o in outcomes)
        verdict = "meets" if p99 <= target and complete else "FAILS"
        lines.append(f"- websocket, {subscribers:,} subscribers: p99 from send {_ms(p99)} ms "
                     f"(target ≤ {target:g} ms, every frame delivered): {verdict}")
    counts = sorted({count for (test, count) in results.single if test == "peer"})
    for subscribers in counts:
        ours, peer = _p99(results, "sse", subscribers), _p99(results, "peer", subscribers)
        if math.isnan(ours) or math.isnan(peer):
            continue
        verdict = "equal or better" if ours <= peer else "WORSE"
        lines.append(
            f"- SSE, {subscribers:,} subscribers, p99 from send: syncd {_ms(ours)} ms, RxDB Node "
            f"server {_ms(peer)} ms (peer / syncd = {peer / ours:.2f}x): {verdict}. From send "
            "includes the push: syncd's commits to PostgreSQL (fsync), the peer's memory storage "
            "does not; the peer answers a push only after writing its events to every stream."
        )
    return [*lines, ""] if lines else []


def report(results: Results, options: Options) -> str:
    lines: list[str] = []
    if results.single:
        lines += _single_table(results, options)
    if results.cluster:
        clustered = results.cluster
        sql_p99 = _median([o.sql.p99_ms for o in clustered])
        verdict = "—" if math.isnan(sql_p99) else ("meets" if sql_p99 <= 100 else "FAILS")
        failed = sum(o.failed for o in clustered)
        lines += [
            f"**{options.nodes} syncd nodes, {options.cluster_subscribers:,} subscribers spread "
            f"round-robin" + (f" ({failed} failed to open)" if failed else "") + f"; "
            f"{options.pushes} writes per path, one at a time**",
            "",
            "| path | p50 ms | p99 ms | max ms | p50 from send ms | p99 from send ms "
            "| missing (subscriber, doc) "
            "| RESYNCs / closed / duplicates |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows: list[tuple[str, list[Latency], list[PhaseData]]] = [
            ("HTTP push to node 1 → node 1's subscribers",
             [o.local for o in clustered], [o.http_data for o in clustered]),
            (f"HTTP push to node 1 → nodes 2-{options.nodes}'s subscribers (batched NOTIFY)",
             [o.remote for o in clustered], [o.http_data for o in clustered]),
            (f"plain SQL INSERT → every node's subscribers (head poll; p99 ≤ 100 ms: "
             f"{verdict})",
             [o.sql for o in clustered], [o.sql_data for o in clustered]),
        ]
        for label, latencies, datas in rows:
            extra = (f"{sum(d.resyncs for d in datas)} / {sum(d.closed for d in datas)} / "
                     f"{sum(d.duplicates for d in datas)}")
            lines.append("| " + " | ".join([label, *_latency_cells(latencies), extra]) + " |")
        per_node = [
            _ms(_median([o.sql_per_node_p99_ms[n] for o in clustered]))
            for n in range(options.nodes)
        ]
        lines += [
            "",
            f"Plain-SQL p99 per node: {', '.join(per_node)} ms. Busiest node's CPU during the "
            f"HTTP writes: {_median([o.syncd_cpu for o in clustered]):.0%}; busiest client "
            f"process: {_median([o.http_data.client_cpu for o in clustered]):.0%}.",
            "",
        ]
    lines.append(
        f"Medians of {options.runs} run(s) (max: the largest of all runs; missing, RESYNCs, "
        "closed, duplicates: summed). Latency = frame received by the subscriber - write "
        "acknowledged (HTTP response received / SQL INSERT returned), over every (subscriber, "
        "document) pair; negative when the frame beat the HTTP response. Each write waits until "
        f"every subscriber received the previous one (≤ {options.delivery_timeout:g} s), then "
        f"{options.gap_min_ms:g}-{options.gap_max_ms:g} ms. Idle KiB per subscriber = the "
        "server's RSS once every subscriber is open (websocket: got its RESYNC; SSE: got a "
        "first event) - before, / subscribers. CPU 100% = one core; this machine has "
        f"{os.cpu_count()} CPUs for the server, PostgreSQL and the clients together."
    )
    return "\n".join(lines)


# --- the database (benchkit.scratch_database: embedded, or scratch on a loopback server) ------


def prepare(url: str) -> Any:
    """Migrate the database and register the collection with syncd's own CLI; its id."""
    from syncd.db import migrate

    migrate.upgrade(url)
    command = [sys.executable, "-m", "syncd", "collections", "add", COLLECTION,
               "--schema", str(SCHEMA)]
    done = subprocess.run(
        command, env={**os.environ, "SYNCD_DATABASE_URL": url}, cwd=REPO, capture_output=True,
        text=True, timeout=120, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    benchkit.progress(done.stdout.strip())

    async def collection_id() -> Any:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            return await conn.fetchval(
                "SELECT id FROM syncd_collections WHERE name = $1", COLLECTION
            )
        finally:
            await conn.close()

    return benchkit.run(collection_id())


async def describe_server(url: str) -> str:
    return await benchkit.describe_server(
        lambda: asyncpg.connect(asyncpg_dsn(url)),
        ("fsync", "synchronous_commit", "max_connections"),
        cpus="CPUs",
    )


# --- command line ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    subscribers: tuple[int, ...]
    cluster_subscribers: int
    nodes: int
    pushes: int
    runs: int
    tests: tuple[str, ...]
    per_process: int
    max_processes: int
    workers: int
    connect_concurrency: int
    open_timeout: float
    connect_timeout: float
    delivery_timeout: float
    gap_min_ms: float
    gap_max_ms: float
    settle: float


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not values or any(v < 1 or v > 20_000 for v in values):
        raise argparse.ArgumentTypeError("each count must be between 1 and 20,000")
    return values


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = benchkit.argument_parser(
        "Live delivery latency, completeness and memory of syncd websocket streams.",
        database_help="loopback or Unix-socket PostgreSQL URL of a server where a scratch "
        "database may be created (default: an embedded server in a temp dir)",
    )
    parser.add_argument(
        "--subscribers", type=_counts, default=(100, 1000, 10_000),
        help="subscriber counts of the single-server cells (single, sse, peer), e.g. "
        "100,1000,10000",
    )
    parser.add_argument("--cluster-subscribers", type=int, default=1000,
                        help="subscribers of the multi-node cell, spread over the nodes")
    parser.add_argument("--nodes", type=int, default=3, help="syncd nodes of the cluster cell")
    parser.add_argument("--pushes", type=int, default=200, help="writes per phase")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported")
    parser.add_argument("--tests", type=benchkit.csv_choices(TESTS), default=TESTS,
                        help="any of single (syncd websocket), sse (syncd SSE), peer (RxDB's "
                        "Node server, SSE) and cluster, comma-separated")
    parser.add_argument("--per-process", type=int, default=500,
                        help="subscribers per client process (before --max-processes)")
    parser.add_argument("--max-processes", type=int, default=8, help="client processes at most")
    parser.add_argument("--workers", type=int, default=1,
                        help="uvicorn worker processes of the syncd node in the single and sse "
                        "cells (`syncd serve --workers`); a push wakes the other workers' "
                        "subscribers through syncd's NOTIFY")
    parser.add_argument("--connect-concurrency", type=int, default=50,
                        help="websocket handshakes in flight per client process")
    parser.add_argument("--open-timeout", type=float, default=30.0,
                        help="seconds for one subscriber's handshake and RESYNC")
    parser.add_argument("--connect-timeout", type=float, default=300.0,
                        help="seconds for all subscribers of a cell to be open")
    parser.add_argument("--delivery-timeout", type=float, default=5.0,
                        help="seconds a write waits for every subscriber before the next one")
    parser.add_argument("--gap-ms", default="10,50",
                        help="random pause between writes after delivery: MIN,MAX ms")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to wait before reading RSS and before writing")
    args = parser.parse_args(argv)
    try:
        gap_min, gap_max = (float(v) for v in args.gap_ms.split(","))
    except ValueError:
        parser.error("--gap-ms takes MIN,MAX in milliseconds")
    if not 0 <= gap_min <= gap_max <= 10_000:
        parser.error("--gap-ms: 0 ≤ MIN ≤ MAX ≤ 10000")
    if not 1 <= args.pushes <= 100_000 or not 1 <= args.runs <= 20:
        parser.error("--pushes must be 1..100000 and --runs 1..20")
    if not 1 <= args.nodes <= 16 or not 1 <= args.cluster_subscribers <= 20_000:
        parser.error("--nodes must be 1..16 and --cluster-subscribers 1..20000")
    if not 1 <= args.workers <= 16:
        parser.error("--workers must be 1..16")
    if args.per_process < 1 or not 1 <= args.max_processes <= 64 or args.connect_concurrency < 1:
        parser.error("--per-process, --max-processes (≤ 64), --connect-concurrency: positive")
    if min(args.open_timeout, args.connect_timeout, args.delivery_timeout) <= 0:
        parser.error("timeouts must be positive")
    options = Options(
        subscribers=args.subscribers,
        cluster_subscribers=args.cluster_subscribers,
        nodes=args.nodes,
        pushes=args.pushes,
        runs=args.runs,
        tests=args.tests,
        per_process=args.per_process,
        max_processes=args.max_processes,
        workers=args.workers,
        connect_concurrency=args.connect_concurrency,
        open_timeout=args.open_timeout,
        connect_timeout=args.connect_timeout,
        delivery_timeout=args.delivery_timeout,
        gap_min_ms=gap_min,
        gap_max_ms=gap_max,
        settle=max(0.0, args.settle),
    )
    return args, options


def main(argv: Sequence[str] | None = None) -> int:
    args, options = parse_args(argv)
    benchkit.exit_on_signals()
    files = benchkit.raise_nofile_limit()
    needed = max((*options.subscribers, options.cluster_subscribers)) + 200
    if files < needed:
        benchkit.progress(f"WARNING: RLIMIT_NOFILE is {files}; the largest cell needs about "
                          f"{needed} descriptors in the syncd node")
    token = secrets.token_hex(3)
    launched = Launched()
    log_dir = Path(tempfile.mkdtemp(prefix="streambench-logs-"))
    keep_logs = True
    try:
        with benchkit.scratch_database(args.database_url, "streambench", token) as url:
            benchkit.progress(benchkit.run(describe_server(url)))
            collection_id = prepare(url)
            bench = Bench(url=url, collection_id=collection_id, log_dir=log_dir, token=token)
            try:
                results = benchkit.run(run_all(bench, options, launched))
            finally:
                launched.stop_all()  # whatever an interruption left running, by PID
        print(report(results, options))
        keep_logs = False
    finally:
        launched.stop_all()
        if keep_logs:
            benchkit.progress(f"syncd logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    benchkit.run_main(main)
