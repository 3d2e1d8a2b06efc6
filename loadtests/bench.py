#!/usr/bin/env python3
"""Issue #6 in one command: push and pull throughput of syncd against the raw limit and the peer.

One run on one machine, every number a median over ``--runs``, ratios measured within the run:

* **the limit** (raw asyncpg against the same PostgreSQL, no HTTP): batches of 100 new documents
  through syncd's own compare-and-set statement (``syncd.db.store.PUSH_SQL``, one statement in
  autocommit) from 1 connection and from 2 processes x 2 connections; and pages of 1000
  through the 100,000-document collection with syncd's ``PULL_SQL``, the stored JSON texts spliced
  into a ``{"documents":[...],"checkpoint":...}`` body without decoding them.
* **syncd** (``python -m syncd serve`` on 127.0.0.1, 1 and 2 uvicorn workers, auth mode none):
  the same batches through the native API (``POST /api/v1/sync/bench_push``) from 1 and 8
  clients; pages of 1000 through ``bench_pull`` (``--pull-docs``, 100,000 documents; each client
  pulls the whole collection from checkpoint null) from 1 and 4 clients; and push, 1 client, into
  ``bench_big``, which holds ``--big-docs`` (1,000,000) documents, next to the same cell on the
  empty ``bench_push``.
* **the peer**: RxDB's own Node server (``loadtests/peer/server.mjs``: rxdb-server 15.22.0,
  memory storage, no durability) and syncd's rxdb-server endpoint (``/rxdb/bench_pull/0``) under
  the very same requests, both holding the 100,000 pull documents: pushes of 100 new documents
  from 1 and 8 clients onto them, pages of 1000 through them from 1 and 4 clients.

All collections use the ~1 KB documents of ``loadtests/documents.py`` (schema
``loadtests/bench_schema.json``), loaded by COPY (syncd's trigger stamps them) or, into the peer,
pushed 1000 per request. Pushes create new documents (no assumedMasterState, so no conflicts;
every answer is checked to be ``[]``, and afterwards the table, or the peer by a full pull, to hold
exactly what was acknowledged); every pulling client is checked to receive every document.
Before each cell its collection is reset (``bench_push`` emptied, ``bench_pull`` back to its
100,000 documents; DELETE, VACUUM, CHECKPOINT) and the push peer restarted and reloaded, so no
cell inherits another's writes. Push cells run ``--warmup`` s, then count the batches acknowledged
within ``--seconds`` s; pull cells time whole passes. Compared cells (syncd and its limit, syncd
and the peer, big and empty) run back to back, in an order rotated every run; ratios are the
median of the per-run ratios, which the background load of a shared machine disturbs least.

The load generator: ``--client-procs`` processes (uvloop, a minimal HTTP/1.1 keep-alive client on
asyncio streams), the clients of a cell spread over them; the table shows their CPU share and the
server's (syncd: the process and its workers; PostgreSQL is not included) during the cell.

The default ``--parts throughput,stream`` then runs ``loadtests/stream_bench.py`` (live delivery
latency push sent -> frame received with 100, 1,000 and 10,000 websocket subscribers, memory per
idle subscriber, syncd's SSE against the peer's) as a subprocess with ``--stream-args`` and
passes its report through.

Full run (the figures in BENCHMARKS.md; about 10-15 minutes on 2 vCPUs for the throughput part,
20-40 more for the stream part)::

    .venv/bin/python loadtests/bench.py

Smoke run (a minute or two)::

    .venv/bin/python loadtests/bench.py --quick

Everything started (syncd servers, the peer, client processes, the embedded PostgreSQL in a
temporary directory, or a scratch database ``bench_<token>`` on a loopback ``--database-url``)
is stopped by PID and removed when the script ends, also on Ctrl-C, SIGTERM or an error.
Loopback only. Needs Node 20+; installs the peer with ``npm ci`` when its node_modules is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import multiprocessing
import os
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.context import SpawnContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import asyncpg
import benchkit
import documents
import orjson
import psutil  # type: ignore[import-untyped]

from syncd.db.store import PULL_SQL, PUSH_SQL
from syncd.db.urls import asyncpg_dsn

REPO = Path(__file__).resolve().parent.parent
LOADTESTS = Path(__file__).resolve().parent
PEER_DIR = LOADTESTS / "peer"
PUSH_COLLECTION, PULL_COLLECTION, BIG_COLLECTION = "bench_push", "bench_pull", "bench_big"
# The collections reset before each cell that uses them, and the id prefix of the documents
# loaded into them that stay (bench_big keeps growing: its cells compare with an empty one).
BASE_PREFIX = {PUSH_COLLECTION: "", PULL_COLLECTION: "pull-"}
PEER_COLLECTION = "benchdocs"  # server.mjs serves it at /benchdocs/0
BATCH = 100  # push rows per request
PAGE = 1000  # pull page size
LOAD_CHUNK = 20_000  # documents per COPY when loading a collection
PARTS: tuple[str, ...] = ("throughput", "stream")
REQUEST_TIMEOUT = 60.0  # one HTTP request or statement; a slower one fails the cell


class BenchError(RuntimeError):
    """A wrong answer or a server that failed: the cell's figures would be meaningless."""


# --- a minimal HTTP/1.1 keep-alive client (the load generator must not be the bottleneck) ---------


class HttpConnection:
    """One keep-alive connection to 127.0.0.1:port; requests one at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None

    async def request(
        self, method: str, target: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        if self._writer is None or self._reader is None:
            await self.open()
        assert self._writer is not None and self._reader is not None
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (body or b""))
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await self._response(self._reader)

    async def _response(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        status = int((await reader.readline()).split(b" ", 2)[1])
        length, chunked, close = None, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            body = await _read_chunked(reader)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body, close = await reader.read(), True
        if close:
            await self.close()
        return status, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while size := int((await reader.readline()).split(b";")[0], 16):
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
    while (await reader.readline()) not in (b"\r\n", b""):  # trailers
        pass
    return b"".join(parts)


# --- protocols: the same load against syncd's native API and the rxdb-server endpoints ------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a cell's HTTP load goes: ``protocol`` is ``native`` or ``rxdb``; ``base`` is the
    native collection URL or the rxdb-server endpoint URL (without /pull, /push)."""

    port: int
    protocol: str
    base: str

    def push_target(self) -> str:
        return self.base if self.protocol == "native" else self.base + "/push"

    def pull_target(self, checkpoint: dict[str, Any] | None, limit: int) -> str:
        if self.protocol == "native":
            query = "" if checkpoint is None else "&checkpoint=" + quote(
                orjson.dumps(checkpoint).decode(), safe="")
            return f"{self.base}?limit={limit}{query}"
        if checkpoint is None:
            return f"{self.base}/pull?lwt=0&id=&limit={limit}"
        token = quote(str(checkpoint["id"]), safe="")
        return f"{self.base}/pull?lwt={checkpoint['lwt']}&id={token}&limit={limit}"


def native(port: int, collection: str) -> Endpoint:
    return Endpoint(port, "native", f"/api/v1/sync/{collection}")


def rxdb(port: int, collection: str) -> Endpoint:
    return Endpoint(port, "rxdb", f"/rxdb/{collection}/0")


def peer_endpoint(port: int) -> Endpoint:
    return Endpoint(port, "rxdb", f"/{PEER_COLLECTION}/0")


async def push_batch(conn: HttpConnection, endpoint: Endpoint, prefix: str, start: int,
                     count: int) -> None:
    body = orjson.dumps(documents.insert_rows(prefix, start, count))
    status, answer = await conn.request("POST", endpoint.push_target(), body)
    if status != 200 or answer.strip() != b"[]":
        raise BenchError(f"push to :{endpoint.port}{endpoint.push_target()} answered {status} "
                         f"{answer[:300]!r} (expected 200 [])")


async def pull_all(conn: HttpConnection, endpoint: Endpoint, limit: int,
                   deadline: float) -> int:
    """Pull the whole collection from checkpoint null, giving up at ``deadline`` (``time.time()``);
    the number of documents received."""
    checkpoint: dict[str, Any] | None = None
    received = 0
    while time.time() < deadline:
        status, answer = await conn.request("GET", endpoint.pull_target(checkpoint, limit))
        if status != 200:
            raise BenchError(f"pull from :{endpoint.port}{endpoint.base} answered {status} "
                             f"{answer[:300]!r}")
        page = orjson.loads(answer)
        received += len(page["documents"])
        checkpoint = page["checkpoint"]
        if len(page["documents"]) < limit:
            return received
    raise BenchError(f"pull from :{endpoint.port}{endpoint.base} not done before the deadline")


# --- client processes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """One client process's share of a cell."""

    kind: str  # push | pull | limit-push | limit-pull
    clients: int  # connections in this process
    prefix: str  # of new document ids (push)
    warmup: float
    seconds: float
    deadline: float  # time.time() after which the process gives up
    endpoint: Endpoint | None = None
    dsn: str = ""
    collection_id: uuid.UUID | None = None


@dataclass(slots=True)
class Outcome:
    docs: int = 0  # counted: pushed inside the window, or pulled in all
    acknowledged: int = 0  # pushed in all (warm-up and tail included): checked against the table
    elapsed: float = 0.0  # the window, or the slowest client's whole pull
    cpu: float = 0.0  # this process's CPU seconds over that interval
    pulls: list[int] = field(default_factory=list)  # documents each pulling client received
    error: str = ""


def client_main(job: Job, barrier: Barrier, results: Queue[Outcome]) -> None:
    outcome = Outcome()
    try:
        outcome = benchkit.run(_client(job, barrier))
    except BaseException as error:  # reported to the parent, which fails the cell
        outcome.error = f"{type(error).__name__}: {error}"
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.abort()  # the other processes of the cell stop waiting for this one
    results.put(outcome)


async def _client(job: Job, barrier: Barrier) -> Outcome:
    async with _connections(job) as conns:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, barrier.wait, 120.0)  # every process connected
        if job.kind in ("push", "limit-push"):
            return await _push_cell(job, conns)
        return await _pull_cell(job, conns)


@contextlib.asynccontextmanager
async def _connections(job: Job) -> AsyncIterator[list[Any]]:
    conns: list[Any] = []
    try:
        for _ in range(job.clients):
            if job.kind.startswith("limit"):
                conns.append(await benchkit.connect(job.dsn, "bench-limit"))
            else:
                assert job.endpoint is not None
                http = HttpConnection(job.endpoint.port)
                await http.open()
                conns.append(http)
        yield conns
    finally:
        for conn in conns:
            await conn.close()


async def _push_cell(job: Job, conns: list[Any]) -> Outcome:
    window = benchkit.Window()
    outcome = Outcome()
    cpu: list[float] = []

    async def one(index: int, conn: Any) -> None:
        prefix, start = f"{job.prefix}c{index}-", 0
        while not window.stopped and time.time() < job.deadline:
            if job.kind == "push":
                assert job.endpoint is not None
                await push_batch(conn, job.endpoint, prefix, start, BATCH)
            else:
                await limit_push(conn, job, prefix, start)
            start += BATCH
            outcome.acknowledged += BATCH
            if window.measuring:
                outcome.docs += BATCH

    async def timed() -> None:
        await asyncio.sleep(job.warmup)
        cpu.append(time.process_time())
        await asyncio.sleep(job.seconds)
        cpu.append(time.process_time())

    await asyncio.gather(window.run(job.warmup, job.seconds), timed(),
                         *(one(i, conn) for i, conn in enumerate(conns)))
    outcome.elapsed, outcome.cpu = window.elapsed, cpu[1] - cpu[0]
    return outcome


async def limit_push(conn: Any, job: Job, prefix: str, start: int) -> None:
    """syncd's push, minus HTTP and the service: its compare-and-set statement, with the
    documents encoded as syncd encodes them (orjson text, assumedMasterState NULL), sent the
    cheapest correct way: one statement in autocommit is atomic on its own, so no BEGIN/COMMIT
    round trips, whatever syncd wraps it in."""
    rows = documents.insert_rows(prefix, start, BATCH)
    ids = [row["newDocumentState"]["id"] for row in rows]
    new = [orjson.dumps(row["newDocumentState"]).decode() for row in rows]
    written = await conn.fetch(PUSH_SQL, job.collection_id, "", ids, [None] * len(ids), new)
    if len(written) != len(ids):
        raise BenchError(f"limit push wrote {len(written)} of {len(ids)} rows")


async def _pull_cell(job: Job, conns: list[Any]) -> Outcome:
    started, cpu = time.perf_counter(), time.process_time()
    finished: list[float] = []

    async def one(conn: Any) -> int:
        if job.kind == "pull":
            assert job.endpoint is not None
            got = await pull_all(conn, job.endpoint, PAGE, job.deadline)
        else:
            got = await limit_pull_all(conn, job)
        finished.append(time.perf_counter() - started)
        return got

    pulls = await asyncio.gather(*(one(conn) for conn in conns))
    return Outcome(docs=sum(pulls), elapsed=max(finished), cpu=time.process_time() - cpu,
                   pulls=list(pulls))


async def limit_pull_all(conn: Any, job: Job) -> int:
    """syncd's pull, minus HTTP and the service: its keyset statement page after page, the
    stored JSON texts joined into the response body as syncd's page_body does."""
    xid, seq, received = 0, 0, 0
    while time.time() < job.deadline:
        rows = await conn.fetch(PULL_SQL, job.collection_id, "", xid, seq, PAGE)
        if rows:
            xid, seq = rows[-1][1], rows[-1][2]
        body = (b'{"documents":[' + ",".join(row[0] for row in rows).encode()
                + b'],"checkpoint":' + orjson.dumps({"xid": xid, "seq": seq}) + b"}")
        del body  # built only to pay what syncd's page_body pays; there is no one to send it to
        received += len(rows)
        if len(rows) < PAGE:
            return received
    raise BenchError("limit pull not done before the deadline")


# --- servers: syncd and the peer, started on free loopback ports, stopped by PID ----------------


class Server:
    """A server process on 127.0.0.1 (``start_new_session``: Ctrl-C reaches only the bench)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int,
                 log_dir: Path, cwd: Path) -> None:
        self.name, self.port = name, port
        self.log_path = log_dir / f"{name}-{port}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=benchkit.child_preexec,
        )
        self._ps = psutil.Process(self.process.pid)

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def problems(self) -> list[str]:
        self._log.flush()
        return [line for line in self.log_path.read_text(errors="replace").splitlines()
                if "ERROR" in line or "Traceback" in line]

    def wait_until(self, ready: Callable[[], bool], within: float = 90.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited early:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready within {within:g}s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU of the process and its children (uvicorn's workers)."""
        total = 0.0
        for proc in [self._ps, *self._ps.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM to this PID; uvicorn stops its workers itself
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                benchkit.progress(f"WARNING: {self.name} (pid {self.process.pid}) ignored "
                                  "SIGTERM; killing it")
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def _http_ok(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)  # no proxy lookups
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_syncd(url: str, workers: int, log_dir: Path) -> Server:
    port = benchkit.free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("SYNCD_HOST", "SYNCD_PORT", "SYNCD_WORKERS")}
    env.update(SYNCD_DATABASE_URL=url, SYNCD_AUTH_MODE="none")
    env.setdefault("SYNCD_LOG_LEVEL", "warning")
    server = Server(f"syncd-{workers}w", [sys.executable, "-m", "syncd", "serve", "--host",
                    "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                    env, port, log_dir, REPO)
    server.wait_until(lambda: _http_ok(port, "/readyz"))
    return server


def ensure_peer_installed() -> None:
    if (PEER_DIR / "node_modules" / "rxdb-server").is_dir():
        return
    benchkit.progress(f"installing the peer: npm ci --prefix {PEER_DIR} …")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(PEER_DIR)],
                   check=True, timeout=600, stdout=sys.stderr)


def start_peer(node: str, log_dir: Path) -> Server:
    port = benchkit.free_port()
    server = Server("peer", [node, str(PEER_DIR / "server.mjs"), "--port", str(port)],
                    dict(os.environ), port, log_dir, PEER_DIR)
    server.wait_until(lambda: "READY http://127.0.0.1:" in server.log_tail(5))
    return server


@dataclass(slots=True)
class Launched:
    servers: list[Server] = field(default_factory=list)

    def stop(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        for server in list(self.servers):
            self.stop(server)


# --- the database ---------------------------------------------------------------------------------


def prepare(url: str) -> dict[str, uuid.UUID]:
    """Migrate with syncd's migrations and register the collections with syncd's own CLI."""
    from syncd.db import migrate

    migrate.upgrade(url)
    for name in (PUSH_COLLECTION, PULL_COLLECTION, BIG_COLLECTION):
        command = [sys.executable, "-m", "syncd", "collections", "add", name,
                   "--schema", str(documents.SCHEMA_PATH)]
        done = subprocess.run(command, env={**os.environ, "SYNCD_DATABASE_URL": url}, cwd=REPO,
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return benchkit.run(_collection_ids(url))


async def _collection_ids(url: str) -> dict[str, uuid.UUID]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT name, id FROM syncd_collections")
    finally:
        await conn.close()
    return {row["name"]: row["id"] for row in rows}


async def bulk_load(url: str, collection_id: uuid.UUID, prefix: str, count: int) -> None:
    """``count`` documents by COPY: the row trigger stamps the change order as for any insert.
    One transaction per chunk, then VACUUM ANALYZE so that no cell pays for hint bits."""
    conn = await benchkit.connect(asyncpg_dsn(url), "bench-load", statement_timeout="0")
    try:
        for start in range(0, count, LOAD_CHUNK):
            ids = [f"{prefix}{i:09d}" for i in range(start, min(count, start + LOAD_CHUNK))]
            records = [(collection_id, doc_id, orjson.dumps(documents.document(doc_id)).decode())
                       for doc_id in ids]
            await conn.copy_records_to_table(
                "syncd_documents", columns=["collection_id", "id", "data"], records=records)
            if start // LOAD_CHUNK % 10 == 9:
                benchkit.progress(f"  loaded {start + len(records):,} of {count:,}")
        await conn.execute("VACUUM ANALYZE syncd_documents")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def count_documents(url: str, collection_id: uuid.UUID) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        found: int = await conn.fetchval(
            "SELECT count(*) FROM syncd_documents WHERE collection_id = $1", collection_id)
        return found
    finally:
        await conn.close()


async def reset_collection(url: str, collection_id: uuid.UUID, keep: str) -> None:
    """Before a cell: only the documents loaded with id prefix ``keep`` left (none when it is
    empty), dead rows vacuumed, dirty pages flushed, so no cell inherits another's writes."""
    conn = await benchkit.connect(asyncpg_dsn(url), "bench-reset", statement_timeout="0")
    try:
        await conn.execute(
            "DELETE FROM syncd_documents WHERE collection_id = $1"
            " AND ($2 = '' OR NOT starts_with(id, $2))", collection_id, keep)
        await conn.execute("VACUUM syncd_documents")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def load_peer(port: int, count: int) -> None:
    """The peer's copy of the pull collection: the same documents, pushed 1000 per request."""
    conn = HttpConnection(port)
    try:
        for start in range(0, count, PAGE):
            await push_batch(conn, peer_endpoint(port), "pull-", start, min(PAGE, count - start))
    finally:
        await conn.close()


async def check_peer(port: int, acknowledged: int) -> None:
    """The peer really holds every document it acknowledged (its pushes are not counted in
    PostgreSQL): one pull over its whole collection."""
    conn = HttpConnection(port)
    try:
        held = await pull_all(conn, peer_endpoint(port), PAGE, time.time() + 600)
    finally:
        await conn.close()
    if held != acknowledged:
        raise BenchError(f"the peer acknowledged {acknowledged} documents but holds {held}")


async def describe_server(url: str) -> str:
    return await benchkit.describe_server(
        lambda: asyncpg.connect(asyncpg_dsn(url)),
        ("fsync", "synchronous_commit", "shared_buffers", "max_connections"), cpus="CPUs")


# --- cells ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    key: str  # stable name, e.g. "syncd-1w native push 8c"
    kind: str  # push | pull | limit-push | limit-pull
    clients: int
    procs: int  # client processes the clients are spread over
    endpoint: Callable[[], Endpoint] | None = None  # resolved when the servers run
    server: str = ""  # key of the server whose CPU is measured
    collection: str = PUSH_COLLECTION
    expect: int = 0  # documents each pulling client must receive


@dataclass(frozen=True, slots=True)
class Sample:
    rate: float  # documents per second
    client_cpu: float  # share of one core, summed over the client processes
    server_cpu: float


@dataclass(slots=True)
class Context:
    url: str
    ids: dict[str, uuid.UUID]
    options: Options
    servers: dict[str, Server]
    mp: SpawnContext
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    # Restarts the push peer and loads it with the pull collection's documents: before each of
    # its cells, as syncd's collection is reset to them before each of its cells.
    fresh_peer: Callable[[], None] = lambda: None


def _spread(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_cell(ctx: Context, cell: Cell, run: int) -> Sample:
    collection_id = ctx.ids[cell.collection]
    pushing = cell.kind in ("push", "limit-push")
    # The peer keeps its documents in its own memory; only syncd's and the limit's land here.
    stored_here = pushing and not cell.server.startswith("peer")
    if cell.collection in BASE_PREFIX:
        benchkit.run(reset_collection(ctx.url, collection_id, BASE_PREFIX[cell.collection]))
    if cell.server == "peer-push":
        ctx.fresh_peer()
    before = benchkit.run(count_documents(ctx.url, collection_id)) if stored_here else 0
    opts = ctx.options
    endpoint = cell.endpoint() if cell.endpoint is not None else None
    base = Job(kind=cell.kind, clients=0, prefix="", warmup=opts.warmup, seconds=opts.seconds,
               deadline=time.time() + opts.cell_timeout, endpoint=endpoint,
               dsn=asyncpg_dsn(ctx.url), collection_id=collection_id)
    jobs = [replace(base, clients=n, prefix=f"r{run}-{secrets.token_hex(3)}-p{i}-")
            for i, n in enumerate(_spread(cell.clients, cell.procs))]
    server = ctx.servers.get(cell.server)
    window = (opts.warmup, opts.seconds) if pushing else None
    outcomes, server_cpu = _run_processes(ctx.mp, jobs, opts.cell_timeout + 30, server, window)
    acknowledged = sum(o.acknowledged for o in outcomes)
    if stored_here:
        stored = benchkit.run(count_documents(ctx.url, collection_id)) - before
        if stored != acknowledged:
            raise BenchError(f"{cell.key}: {acknowledged} documents acknowledged, "
                             f"{stored} stored")
    elif pushing:  # the fresh peer must hold exactly its documents and what it acknowledged
        benchkit.run(check_peer(ctx.servers[cell.server].port,
                                ctx.options.pull_docs + acknowledged))
    if pushing:
        elapsed = statistics.fmean(o.elapsed for o in outcomes)
    else:
        pulls = [n for o in outcomes for n in o.pulls]
        if any(n != cell.expect for n in pulls):
            raise BenchError(f"{cell.key}: clients received {pulls}, expected {cell.expect} each")
        elapsed = max(o.elapsed for o in outcomes)
    docs = sum(o.docs for o in outcomes)
    sample = Sample(rate=docs / elapsed, client_cpu=sum(o.cpu for o in outcomes) / elapsed,
                    server_cpu=server_cpu)
    benchkit.progress(f"  run {run + 1} {cell.key:<34} {sample.rate:>9,.0f} docs/s  "
                      f"clients {sample.client_cpu:4.0%}  server {sample.server_cpu:4.0%}")
    if server is not None and (problems := server.problems()):
        raise BenchError(f"{server.name} logged errors:\n" + "\n".join(problems[-10:]))
    return sample


def _run_processes(
    mp: SpawnContext, jobs: Sequence[Job], within: float, server: Server | None,
    window: tuple[float, float] | None,
) -> tuple[list[Outcome], float]:
    """Run the jobs in client processes released together once all are connected; their outcomes
    and the server's CPU share (of one core) over the measured part: the ``(warm-up, seconds)``
    window when given, else from the release to the last result."""
    barrier = mp.Barrier(len(jobs) + 1)  # this process too: it starts the server's CPU clock
    results: Queue[Outcome] = mp.Queue()
    procs = [mp.Process(target=client_main, args=(job, barrier, results), daemon=True)
             for job in jobs]
    clock, share = CpuClock(server), 0.0
    try:
        for proc in procs:
            proc.start()
        with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: see below
            barrier.wait(within)
            if window is not None:
                time.sleep(window[0])
            clock.start()
            if window is not None:
                time.sleep(window[1])
                share = clock.share()
        outcomes = [results.get(timeout=within) for _ in procs]
        if window is None:
            share = clock.share()
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    errors = [o.error for o in outcomes if o.error]
    if errors:
        raise BenchError("client process failed: " + "; ".join(errors))
    return outcomes, share


class CpuClock:
    """The server's CPU share of one core (0 without a server: the limit cells)."""

    def __init__(self, server: Server | None) -> None:
        self.server, self.cpu, self.started = server, 0.0, 0.0

    def start(self) -> None:
        self.cpu = self.server.cpu_seconds() if self.server else 0.0
        self.started = time.perf_counter()

    def share(self) -> float:
        if self.server is None:
            return 0.0
        return (self.server.cpu_seconds() - self.cpu) / (time.perf_counter() - self.started)


# --- phases ---------------------------------------------------------------------------------------


def push_groups(ctx: Context) -> list[list[Cell]]:
    """The push cells, in groups whose cells are compared with each other (run back to back)."""
    s, procs = ctx.servers, ctx.options.client_procs
    groups: list[list[Cell]] = []
    for clients, limit in ((1, Cell("limit push 1 conn", "limit-push", 1, 1)),
                           (8, Cell("limit push 2 procs x 2 conns", "limit-push", 4, 2))):
        groups.append([limit, *(
            Cell(f"{key} native push {clients}c", "push", clients, min(clients, procs),
                 _native_on(s, key, PUSH_COLLECTION), key) for key in ("syncd-1w", "syncd-2w")
        )])
    return groups


def _native_on(servers: dict[str, Server], key: str, collection: str) -> Callable[[], Endpoint]:
    """The native endpoint of the server started under ``key``, once it runs."""
    return lambda: native(servers[key].port, collection)


def hundred_k_groups(ctx: Context) -> list[list[Cell]]:
    s, n, procs = ctx.servers, ctx.options.pull_docs, ctx.options.client_procs
    groups = [[Cell("limit pull 1 conn", "limit-pull", 1, 1, collection=PULL_COLLECTION,
                    expect=n), *(
        Cell(f"{key} native pull {clients}c", "pull", clients, min(clients, procs),
             _native_on(s, key, PULL_COLLECTION), key, PULL_COLLECTION, n)
        for key, clients in (("syncd-1w", 1), ("syncd-1w", 4), ("syncd-2w", 4))
    )]]
    # syncd's rxdb-server endpoint against the peer, both holding the same documents: pushes
    # into the pull collection (reset to its documents before each cell; the peer restarted
    # and loaded with them), and pulls through it.
    for clients in (1, 8):
        groups.append([
            Cell(f"syncd-1w rxdb push {clients}c", "push", clients, min(clients, procs),
                 lambda: rxdb(s["syncd-1w"].port, PULL_COLLECTION), "syncd-1w", PULL_COLLECTION),
            Cell(f"peer push {clients}c", "push", clients, min(clients, procs),
                 lambda: peer_endpoint(s["peer-push"].port), "peer-push", PULL_COLLECTION),
        ])
    for clients in (1, 4):
        groups.append([
            Cell(f"syncd-1w rxdb pull {clients}c", "pull", clients, min(clients, procs),
                 lambda: rxdb(s["syncd-1w"].port, PULL_COLLECTION), "syncd-1w",
                 PULL_COLLECTION, n),
            Cell(f"peer pull {clients}c", "pull", clients, min(clients, procs),
                 lambda: peer_endpoint(s["peer-pull"].port), "peer-pull", PULL_COLLECTION, n),
        ])
    return groups


def big_groups(ctx: Context) -> list[list[Cell]]:
    s = ctx.servers
    return [[
        Cell("syncd-1w native push 1c, empty", "push", 1, 1,
             lambda: native(s["syncd-1w"].port, PUSH_COLLECTION), "syncd-1w"),
        Cell("syncd-1w native push 1c, big", "push", 1, 1,
             lambda: native(s["syncd-1w"].port, BIG_COLLECTION), "syncd-1w", BIG_COLLECTION),
    ]]


def run_phase(ctx: Context, name: str, groups: list[list[Cell]]) -> None:
    """Every cell once per run. The groups go in a rotated order, and so do the cells inside a
    group: compared cells run back to back, none always first."""
    count = sum(len(group) for group in groups)
    benchkit.progress(f"phase {name}: {count} cells x {ctx.options.runs} runs")
    for run in range(ctx.options.runs):
        for g in benchkit.rotated(tuple(str(i) for i in range(len(groups))), run):
            group = {cell.key: cell for cell in groups[int(g)]}
            for key in benchkit.rotated(tuple(group), run):
                ctx.samples.setdefault(key, []).append(run_cell(ctx, group[key], run))


def throughput(ctx: Context, launched: Launched, log_dir: Path) -> None:
    opts = ctx.options

    def start(key: str, make: Callable[[], Server]) -> None:
        benchkit.progress(f"starting {key} …")
        ctx.servers[key] = make()
        launched.servers.append(ctx.servers[key])

    def stop(key: str) -> None:
        if key in ctx.servers:
            launched.stop(ctx.servers.pop(key))

    def fresh_peer() -> None:
        if "peer-push" in ctx.servers:
            stop("peer-push")
        start("peer-push", lambda: start_peer(opts.node, log_dir))
        benchkit.run(load_peer(ctx.servers["peer-push"].port, opts.pull_docs))

    ctx.fresh_peer = fresh_peer
    start("syncd-1w", lambda: start_syncd(ctx.url, 1, log_dir))
    start("syncd-2w", lambda: start_syncd(ctx.url, 2, log_dir))
    time.sleep(2)  # /readyz answered from one of syncd-2w's workers; let the other finish booting
    run_phase(ctx, "push", push_groups(ctx))

    benchkit.progress(f"loading {opts.pull_docs:,} documents into {PULL_COLLECTION} and the peer …")
    benchkit.run(bulk_load(ctx.url, ctx.ids[PULL_COLLECTION], "pull-", opts.pull_docs))
    start("peer-pull", lambda: start_peer(opts.node, log_dir))
    benchkit.run(load_peer(ctx.servers["peer-pull"].port, opts.pull_docs))
    run_phase(ctx, f"{opts.pull_docs:,} docs", hundred_k_groups(ctx))
    stop("peer-push")
    stop("peer-pull")
    stop("syncd-2w")

    benchkit.progress(f"loading {opts.big_docs:,} documents into {BIG_COLLECTION} …")
    benchkit.run(bulk_load(ctx.url, ctx.ids[BIG_COLLECTION], "big-", opts.big_docs))
    run_phase(ctx, "big", big_groups(ctx))
    stop("syncd-1w")


# --- the report -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    versus: str = ""  # key of the reference cell
    target: str = ""  # e.g. "≥ 60 %"
    needed: float = 0.0  # the ratio the target asks for (0: none)


ROWS: tuple[Row, ...] = (
    Row("limit push 1 conn", "limit: push batch 100, 1 connection"),
    Row("limit push 2 procs x 2 conns", "limit: push batch 100, 2 processes x 2 connections"),
    Row("limit pull 1 conn", "limit: pull page 1000, 1 connection"),
    Row("syncd-1w native push 1c", "syncd 1 worker: push batch 100, 1 client",
        "limit push 1 conn", "≥ 60 % of limit", 0.60),
    Row("syncd-1w native push 8c", "syncd 1 worker: push batch 100, 8 clients",
        "limit push 2 procs x 2 conns"),
    Row("syncd-2w native push 1c", "syncd 2 workers: push batch 100, 1 client",
        "limit push 1 conn"),
    Row("syncd-2w native push 8c", "syncd 2 workers: push batch 100, 8 clients",
        "limit push 2 procs x 2 conns", "≥ 50 % of limit 2x2", 0.50),
    Row("syncd-1w native pull 1c", "syncd 1 worker: pull page 1000, 1 client",
        "limit pull 1 conn", "≥ 50 % of limit", 0.50),
    Row("syncd-1w native pull 4c", "syncd 1 worker: pull page 1000, 4 clients",
        "limit pull 1 conn"),
    Row("syncd-2w native pull 4c", "syncd 2 workers: pull page 1000, 4 clients",
        "limit pull 1 conn"),
    Row("syncd-1w native push 1c, big", "syncd 1 worker: push 1 client, collection of N docs",
        "syncd-1w native push 1c, empty", "≥ 85 % of empty", 0.85),
    Row("syncd-1w native push 1c, empty", "syncd 1 worker: push 1 client, empty (same phase)"),
    Row("peer push 1c", "peer (rxdb-server): push batch 100, 1 client, onto M docs"),
    Row("peer push 8c", "peer (rxdb-server): push batch 100, 8 clients, onto M docs"),
    Row("peer pull 1c", "peer (rxdb-server): pull page 1000, 1 client"),
    Row("peer pull 4c", "peer (rxdb-server): pull page 1000, 4 clients"),
    Row("syncd-1w rxdb push 1c", "syncd 1 worker, /rxdb: push batch 100, 1 client, onto M docs",
        "peer push 1c", "≥ 3x peer", 3.0),
    Row("syncd-1w rxdb push 8c", "syncd 1 worker, /rxdb: push batch 100, 8 clients, onto M docs",
        "peer push 8c", "≥ 3x peer", 3.0),
    Row("syncd-1w rxdb pull 1c", "syncd 1 worker, /rxdb: pull page 1000, 1 client",
        "peer pull 1c", "≥ 3x peer", 3.0),
    Row("syncd-1w rxdb pull 4c", "syncd 1 worker, /rxdb: pull page 1000, 4 clients",
        "peer pull 4c", "≥ 3x peer", 3.0),
)


def _median(samples: Sequence[Sample], attr: str) -> float:
    return float(statistics.median(getattr(sample, attr) for sample in samples))


def _ratio(value: float, needed: float) -> str:
    return f"{value:.2f}x" if needed >= 1 else f"{value:.0%}"


def report(samples: dict[str, list[Sample]], options: Options, header: str) -> str:
    lines = [
        f"### Throughput (docs/s, median of {options.runs} run(s), {options.seconds:g} s per push "
        f"cell after {options.warmup:g} s warm-up; pulls: whole passes over "
        f"{options.pull_docs:,} docs; big = {options.big_docs:,} docs)",
        "",
        header,
        "",
        "| cell | docs/s | range | ratio (range) | target | met | client CPU | server CPU |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for row in ROWS:
        got = samples.get(row.key)
        if not got:
            continue
        rate = _median(got, "rate")
        ratio, met = "", ""
        if row.versus and samples.get(row.versus):
            # Per run, the cells of a comparison ran back to back: the ratio of each run, then
            # the median, is what the background load of a shared machine disturbs least.
            ratios = sorted(a.rate / b.rate for a, b in zip(got, samples[row.versus],
                                                            strict=True))
            value = statistics.median(ratios)
            ratio = (f"{_ratio(value, row.needed)} ({_ratio(ratios[0], row.needed)} - "
                     f"{_ratio(ratios[-1], row.needed)}) vs {row.versus}")
            met = ("yes" if value >= row.needed else "**no**") if row.needed else ""
        low, high = min(s.rate for s in got), max(s.rate for s in got)
        label = row.label.replace("N docs", f"{options.big_docs:,} docs").replace(
            "M docs", f"{options.pull_docs:,} docs")
        lines.append(
            f"| {label} | {rate:,.0f} | {low:,.0f} - {high:,.0f} | {ratio} | {row.target} "
            f"| {met} | {_median(got, 'client_cpu'):.0%} | {_median(got, 'server_cpu'):.0%} |"
        )
    lines += ["", "docs/s: median and range over the runs; ratio: median (and range) over the "
              "runs of the ratio measured within each run, where the compared cells ran back "
              "to back.",
              "CPU = share of one core over the cell (client: all client processes; server: "
              "the syncd process and its workers, or node; PostgreSQL not included; the limit "
              "cells' server column is empty)."]
    return "\n".join(lines)


# --- the stream part: loadtests/stream_bench.py, its report passed through ---------------------


def run_stream(options: Options, database_url: str | None) -> int:
    command = [sys.executable, str(LOADTESTS / "stream_bench.py"), *options.stream_args]
    if database_url is not None:
        command += ["--database-url", database_url]
    benchkit.progress("stream part: " + shlex.join(command[1:]))
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True)
    try:
        return process.wait()
    finally:
        if process.poll() is None:  # interrupted: it cleans up on SIGTERM
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# --- command line ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    parts: tuple[str, ...]
    runs: int
    seconds: float
    warmup: float
    pull_docs: int
    big_docs: int
    client_procs: int
    cell_timeout: float
    node: str
    stream_args: tuple[str, ...]


# Issue #6's stream figures: websocket at 100/1,000/10,000 subscribers, syncd's SSE vs the peer.
FULL_STREAM_ARGS = "--tests single,sse,peer --subscribers 100,1000,10000 --pushes 100 --runs 3"
QUICK_STREAM_ARGS = "--tests single,sse,peer --subscribers 100 --pushes 20 --runs 1"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = benchkit.argument_parser(
        "syncd push/pull throughput vs the raw asyncpg limit and RxDB's own server (issue #6); "
        "optionally the live-stream benchmark too.",
        database_help="loopback or Unix-socket PostgreSQL URL of a server where a scratch "
        "database may be created (default: an embedded server in a temp dir)",
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 run, 2 s cells, 10,000 pull docs, 50,000 big docs, "
                        "small stream cell")
    parser.add_argument("--parts", type=benchkit.csv_choices(PARTS), default=PARTS,
                        help="throughput, stream or both")
    parser.add_argument("--runs", type=int, default=None, help="repetitions (default 3; quick 1)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="measured seconds per push cell (default 5; quick 2)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="warm-up seconds per push cell (default 1; quick 0.5)")
    parser.add_argument("--pull-docs", type=int, default=None,
                        help="documents of the pull collection (default 100000; quick 10000)")
    parser.add_argument("--big-docs", type=int, default=None,
                        help="documents of the big collection (default 1000000; quick 50000)")
    parser.add_argument("--client-procs", type=int, default=2,
                        help="client processes a cell's clients are spread over (at most)")
    parser.add_argument("--cell-timeout", type=float, default=300.0,
                        help="seconds after which a cell's clients give up (it then fails)")
    parser.add_argument("--node", default=shutil.which("node") or "node", help="node binary")
    parser.add_argument("--stream-args", default=None,
                        help=f"arguments for stream_bench.py (default {FULL_STREAM_ARGS!r}; "
                        f"quick {QUICK_STREAM_ARGS!r})")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, smoke: Any) -> Any:
        return value if value is not None else (smoke if quick else full)

    options = Options(
        parts=args.parts,
        runs=pick(args.runs, 3, 1),
        seconds=pick(args.seconds, 5.0, 2.0),
        warmup=pick(args.warmup, 1.0, 0.5),
        pull_docs=pick(args.pull_docs, 100_000, 10_000),
        big_docs=pick(args.big_docs, 1_000_000, 50_000),
        client_procs=args.client_procs,
        cell_timeout=args.cell_timeout,
        node=args.node,
        stream_args=tuple(shlex.split(pick(args.stream_args, FULL_STREAM_ARGS,
                                           QUICK_STREAM_ARGS))),
    )
    if not 1 <= options.runs <= 20 or not 0.5 <= options.seconds <= 600:
        parser.error("--runs must be 1..20 and --seconds 0.5..600")
    if not 0 <= options.warmup <= 60 or not 1 <= options.client_procs <= 16:
        parser.error("--warmup must be 0..60 and --client-procs 1..16")
    if not PAGE <= options.pull_docs <= 10_000_000 or not 0 <= options.big_docs <= 10_000_000:
        parser.error(f"--pull-docs must be {PAGE}..10000000 and --big-docs 0..10000000")
    if options.cell_timeout <= options.warmup + options.seconds:
        parser.error("--cell-timeout must exceed --warmup + --seconds")
    return args, options


def run_throughput(args: argparse.Namespace, options: Options) -> str:
    if not (REPO / "loadtests" / "peer" / "server.mjs").exists():
        raise BenchError("loadtests/peer/server.mjs is missing")
    ensure_peer_installed()
    token = secrets.token_hex(3)
    launched = Launched()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    keep_logs = True
    try:
        with benchkit.scratch_database(args.database_url, "bench", token) as url:
            header = benchkit.run(describe_server(url))
            benchkit.progress(header)
            ctx = Context(url=url, ids=prepare(url), options=options, servers={},
                          mp=multiprocessing.get_context("spawn"))
            try:
                throughput(ctx, launched, log_dir)
            finally:
                launched.stop_all()  # whatever an interruption left running, by PID
        keep_logs = False
        return report(ctx.samples, options, header)
    finally:
        launched.stop_all()
        if keep_logs:
            benchkit.progress(f"server logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args, options = parse_args(argv)
    benchkit.exit_on_signals()
    benchkit.raise_nofile_limit()
    code = 0
    if "throughput" in options.parts:
        print(run_throughput(args, options), flush=True)
    if "stream" in options.parts:
        code = run_stream(options, args.database_url)
    return code


if __name__ == "__main__":
    benchkit.run_main(main)
