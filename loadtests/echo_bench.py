#!/usr/bin/env python3
"""What does a push's echo wait cost? syncd with ``SYNCD_PUSH_ECHO_WAIT_MS=500`` against ``0``.

Since the echo wait (``syncd.hub.Hub.echoed``, called by ``SyncService.push``), a push is answered
only once every live stream of the same identity on the node, for that (collection, partition),
has been sent the frame holding the pushed changes, or after ``SYNCD_PUSH_ECHO_WAIT_MS`` at the
latest (``0``: no wait, the behaviour before). This script measures what that costs.

Per run it starts two ``python -m syncd serve --host 127.0.0.1 --port P --workers 1`` processes
against one PostgreSQL (auth mode none, so every caller is the same identity and every subscriber
is the pusher's own stream; ``SYNCD_LOG_LEVEL=warning``): **on**
(``SYNCD_PUSH_ECHO_WAIT_MS=--echo-wait-ms``, 500) and **off** (``0``). Both run side by side; the
same cell is measured on one, then at once on the other (which goes first alternates per run),
and the cells go in an order rotated every run. Cells (``--cells``):

* **lat-0** / **lat-1**: push latency (request sent -> ``[]`` received), p50 and p99, of
  single-document pushes from 1 client, one at a time, without a live subscriber and with one
  live native websocket subscriber (``ws://127.0.0.1:P/api/v1/sync/bench_push/stream``);
* **tput-0** / **tput-1** / **tput-many**: push throughput (docs/s) of batches of ``--batch``
  (100) new documents from ``--clients`` (8) concurrent clients, without a subscriber, with one,
  and with ``--subscribers`` (100), all reading everything.

Each cell: the collection is reset first (emptied, VACUUM, CHECKPOINT); the subscribers (if any)
are opened in a separate client process (the ``websockets`` package, uvloop) and each is ready at
its first ``"RESYNC"``; the pushing clients (bench.py's keep-alive HTTP/1.1 client, in this
process) push for ``--warmup`` s, then for ``--seconds`` s measured. Every push answer must be
``[]``, and afterwards the table must hold exactly the documents acknowledged. The delivery check:
every subscriber must receive every acknowledged document exactly once (within
``--delivery-timeout`` s after the last push), unless the server told it to ``RESYNC`` (a stream
not sent an echo in time is, and it would then pull: its missing documents are allowed and the
RESYNCs are reported). Documents nobody pushed, duplicates, or a stream closed by the server fail
the run. The table shows the medians over ``--runs`` and the median (range) of the ratio on/off
measured within each run; the server's CPU share (process and worker, PostgreSQL excluded) and
the subscriber process's CPU share, so that a saturated client is visible.

Full run (3 runs x 5 cells x 2 servers, 10 s per cell after 1 s warm-up; about 10 minutes on 2
vCPUs)::

    .venv/bin/python loadtests/echo_bench.py

Smoke run (1 run, 2 s cells; a minute or two)::

    .venv/bin/python loadtests/echo_bench.py --quick

The database is an embedded PostgreSQL in a temporary directory, or a scratch database
``echobench_<token>`` created on a loopback ``--database-url`` (and dropped afterwards).
Everything started (the syncd servers, the subscriber process, the embedded PostgreSQL) is
stopped by PID and removed when the script ends, also on Ctrl-C, SIGTERM or an error. Loopback
only. Other ``SYNCD_*`` variables of the environment are passed on to the servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any, TypeVar

import bench
import benchkit
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

T = TypeVar("T")

COLLECTION = bench.PUSH_COLLECTION  # registered by bench.prepare, with bench_schema.json
MODES: tuple[str, ...] = ("on", "off")
RESYNC_MESSAGE = b'"RESYNC"'
MAX_DOCS_PER_CLIENT = 2_000_000  # per cell: a bound on every push loop, never reached in practice
OPEN_CONCURRENCY = 20  # websocket handshakes in flight at once
PARSED_FRAMES_KEPT = 64  # every subscriber gets the same frames: each is parsed once


class BenchError(bench.BenchError):
    """A wrong answer, a lost document or a failed server: the figures would be meaningless."""


# --- cells ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    key: str
    label: str
    latency: bool  # p50/p99 of each push; else docs/s
    clients: int
    batch: int  # documents per push
    subscribers: int


CELL_KEYS: tuple[str, ...] = ("lat-0", "lat-1", "tput-0", "tput-1", "tput-many")


def make_cells(options: Options) -> list[Cell]:
    c, b, n = options.clients, options.batch, options.subscribers
    every = {
        "lat-0": Cell("lat-0", "push 1 doc, 1 client, no subscriber", True, 1, 1, 0),
        "lat-1": Cell("lat-1", "push 1 doc, 1 client, 1 subscriber (same caller)", True, 1, 1,
                      1),
        "tput-0": Cell("tput-0", f"push {b} docs, {c} clients, no subscriber", False, c, b, 0),
        "tput-1": Cell("tput-1", f"push {b} docs, {c} clients, 1 subscriber (same caller)",
                       False, c, b, 1),
        "tput-many": Cell("tput-many", f"push {b} docs, {c} clients, {n} subscribers (same "
                          "caller)", False, c, b, n),
    }
    return [every[key] for key in options.cells]


@dataclass(frozen=True, slots=True)
class Sample:
    p50: float  # ms, latency cells
    p99: float
    rate: float  # docs/s acknowledged inside the window
    server_cpu: float  # share of one core over the window
    subscriber_cpu: float  # the subscriber process's share of one core while the clients pushed
    resyncs: int  # RESYNCs the subscribers were sent during the cell (their first excluded)


# --- the subscribers: a client process of their own -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriberJob:
    url: str  # ws://127.0.0.1:P/api/v1/sync/<collection>/stream
    subscribers: int
    prefix: str  # of the cell's document ids: <prefix>c<client>-<n:09d>
    clients: int
    open_timeout: float
    delivery_timeout: float  # after the last push, for every stream to have every document
    within: float  # the longest the process waits for the parent's next message


@dataclass(slots=True)
class Delivery:
    opened: int = 0
    frames: int = 0  # document frames received, all subscribers
    resyncs: int = 0  # RESYNCs received after the first, all subscribers
    resynced: int = 0  # subscribers that received one
    missing: int = 0  # (subscriber, acknowledged document) pairs never received
    unexplained: int = 0  # ... by a subscriber that was not told to RESYNC
    duplicates: int = 0
    unexpected: int = 0  # documents received that no client had acknowledged
    closed: int = 0  # streams that ended during the cell
    cpu: float = 0.0  # this process's share of one core while the clients pushed
    catch_up: float = 0.0  # seconds after the last push until every stream had everything


class Receiver:
    """What every subscriber received: per subscriber and client, a count per document number."""

    def __init__(self, prefix: str, subscribers: int, clients: int) -> None:
        self.prefix, self.clients = prefix, clients
        self.counts = [[bytearray() for _ in range(clients)] for _ in range(subscribers)]
        self.received = [0] * subscribers  # documents, duplicates included
        self.resyncs = [0] * subscribers
        self.closed = [False] * subscribers
        self.frames = 0
        self.unexpected = 0
        self._parsed: dict[bytes, tuple[list[tuple[int, int]], int]] = {}
        # Once the clients stopped: the documents acknowledged, and whether every stream is done.
        self.total: int | None = None
        self.finished = asyncio.Event()

    def handle(self, index: int, message: bytes) -> None:
        if message == RESYNC_MESSAGE:
            self.resyncs[index] += 1
            self.check()
            return
        self.frames += 1
        parsed = self._parsed.get(message)
        if parsed is None:
            if len(self._parsed) >= PARSED_FRAMES_KEPT:
                self._parsed.clear()
            parsed = self._parsed[message] = self._parse(message)
        ids, unexpected = parsed
        self.unexpected += unexpected
        counts = self.counts[index]
        for client, number in ids:
            row = counts[client]
            if number >= len(row):
                row.extend(bytes(max(number + 1 - len(row), len(row), 1024)))
            if row[number] < 255:
                row[number] += 1
        self.received[index] += len(ids)
        if self.total is not None and self.received[index] >= self.total:
            self.check()

    def _parse(self, message: bytes) -> tuple[list[tuple[int, int]], int]:
        ids: list[tuple[int, int]] = []
        unexpected = 0
        for doc in orjson.loads(message)["documents"]:
            doc_id = doc.get("id") if isinstance(doc, dict) else None
            key = self._key(doc_id) if isinstance(doc_id, str) else None
            if key is None:
                unexpected += 1
            else:
                ids.append(key)
        return ids, unexpected

    def _key(self, doc_id: str) -> tuple[int, int] | None:
        if not doc_id.startswith(self.prefix):
            return None
        head, _, tail = doc_id[len(self.prefix):].partition("-")
        try:
            client, number = int(head[1:]), int(tail)
        except ValueError:
            return None
        if head[:1] != "c" or not 0 <= client < self.clients:
            return None
        return (client, number) if 0 <= number < MAX_DOCS_PER_CLIENT else None

    def lost(self, index: int) -> None:
        self.closed[index] = True
        self.check()

    def check(self) -> None:
        """``finished`` once every stream received as many documents as were acknowledged, or
        was told to resync (it would pull now), or ended."""
        total = self.total
        if total is not None and all(
            got >= total or resyncs or closed
            for got, resyncs, closed in zip(self.received, self.resyncs, self.closed, strict=True)
        ):
            self.finished.set()

    def tally(self, acked: Sequence[int], delivery: Delivery) -> None:
        delivery.frames, delivery.unexpected = self.frames, self.unexpected
        for index, rows in enumerate(self.counts):
            missing = 0
            for row, want in zip(rows, acked, strict=True):
                head = row[:want]
                got = len(head) - head.count(0)
                missing += want - got
                delivery.duplicates += sum(head) - got
                delivery.unexpected += sum(row[want:])
            delivery.missing += missing
            delivery.resyncs += self.resyncs[index]
            if self.resyncs[index]:
                delivery.resynced += 1
            elif missing:
                delivery.unexplained += missing
            delivery.closed += self.closed[index]


def subscriber_main(job: SubscriberJob, conn: Connection) -> None:
    """The subscriber process: ("ready", opened), then after ("expect", acked per client) from the
    parent, ("result", Delivery); ("error", text) when anything fails."""
    try:
        delivery = benchkit.run(_subscribe(job, conn))
        conn.send(("result", delivery))
    except BaseException as error:  # reported to the parent, which fails the cell
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


async def _next_message(conn: Connection, within: float) -> tuple[Any, ...]:
    """The parent's next message, polled in short slices so that a cancellation is prompt."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(conn.poll, 0.2):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no word from the benchmark within {within:g}s")
    message: tuple[Any, ...] = conn.recv()
    return message


async def _subscribe(job: SubscriberJob, conn: Connection) -> Delivery:
    receiver = Receiver(job.prefix, job.subscribers, job.clients)
    sockets: list[ClientConnection | None] = [None] * job.subscribers
    readers: list[asyncio.Task[None]] = []
    closing = False
    delivery = Delivery()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one(index: int) -> None:
        async with gate:
            ws = await connect(job.url, open_timeout=job.open_timeout, ping_interval=None,
                               compression=None, max_size=None, close_timeout=2,
                               proxy=None)  # loopback: never through a proxy of the environment
            sockets[index] = ws
            first = await asyncio.wait_for(ws.recv(decode=False), job.open_timeout)
            if first != RESYNC_MESSAGE:
                raise BenchError(f"first message was {first[:80]!r}, not RESYNC")

    async def read(index: int, ws: ClientConnection) -> None:
        try:
            while True:
                message = await ws.recv(decode=False)
                receiver.handle(index, message if isinstance(message, bytes)
                                else message.encode())
        except ConnectionClosed:
            if not closing:
                receiver.lost(index)

    try:
        await _first_error([open_one(index) for index in range(job.subscribers)])
        for index, ws in enumerate(sockets):
            assert ws is not None
            readers.append(asyncio.create_task(read(index, ws)))
        delivery.opened = job.subscribers
        conn.send(("ready", job.subscribers))
        cpu, started = time.process_time(), time.perf_counter()
        message = await _next_message(conn, job.within)
        delivery.cpu = (time.process_time() - cpu) / (time.perf_counter() - started)
        if message[0] != "expect":
            return delivery  # the parent gave up on the cell
        acked: list[int] = message[1]
        waited = time.perf_counter()
        receiver.total = sum(acked)
        receiver.check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.finished.wait(), job.delivery_timeout)
        delivery.catch_up = time.perf_counter() - waited
        receiver.tally(acked, delivery)
        return delivery
    finally:
        closing = True
        opened = [ws for ws in sockets if ws is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


class SubscriberProcess:
    """The parent's side: the process started, its messages awaited, the process stopped."""

    def __init__(self, mp: SpawnContext, job: SubscriberJob) -> None:
        self._conn, child = mp.Pipe()
        self.process = mp.Process(target=subscriber_main, args=(job, child), daemon=True,
                                  name="echo-bench-subscribers")
        self.process.start()
        child.close()  # so that its death reads as EOF here

    def _receive(self, kind: str, within: float) -> tuple[Any, ...]:
        try:
            if not self._conn.poll(within):
                raise BenchError(f"subscriber process: no {kind!r} within {within:g}s")
            message: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError) as error:
            raise BenchError(f"subscriber process died (exit code {self.process.exitcode})"
                             ) from error
        if message[0] == "error":
            raise BenchError(f"subscriber process failed: {message[1]}")
        if message[0] != kind:
            raise BenchError(f"subscriber process sent {message[0]!r}, expected {kind!r}")
        return message

    def wait_ready(self, within: float) -> None:
        self._receive("ready", within)

    def finish(self, acked: Sequence[int], within: float) -> Delivery:
        self._conn.send(("expect", list(acked)))
        delivery: Delivery = self._receive("result", within)[1]
        return delivery

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("stop",))
        self.process.join(15)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._conn.close()


# --- the pushing clients (this process) -----------------------------------------------------------


@dataclass(slots=True)
class Pushed:
    acked: list[int]  # documents acknowledged per client (warm-up and tail included)
    docs: int = 0  # acknowledged inside the window
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, pushes inside the window
    server_cpu: float = 0.0


async def _first_error(awaitables: Sequence[Awaitable[Any]]) -> None:
    """All at once; the first failure cancels the others and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for awaitable in awaitables:
                group.create_task(_wrap(awaitable))
    except BaseExceptionGroup as errors:
        first: BaseException = errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def _wrap(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def push_cell(server: bench.Server, cell: Cell, prefix: str, options: Options) -> Pushed:
    endpoint = bench.native(server.port, COLLECTION)
    window = benchkit.Window()
    deadline = time.monotonic() + options.cell_timeout
    pushed = Pushed(acked=[0] * cell.clients)
    cpu: list[float] = []
    conns = [bench.HttpConnection(server.port) for _ in range(cell.clients)]

    async def one(index: int, conn: bench.HttpConnection) -> None:
        client_prefix, start = f"{prefix}c{index}-", 0
        while (not window.stopped and time.monotonic() < deadline
               and start + cell.batch <= MAX_DOCS_PER_CLIENT):
            measured = window.measuring
            sent = time.perf_counter()
            await bench.push_batch(conn, endpoint, client_prefix, start, cell.batch)
            took = time.perf_counter() - sent
            start += cell.batch
            pushed.acked[index] = start
            if window.measuring:
                pushed.docs += cell.batch
                if measured:  # sent and answered inside the window
                    pushed.latencies.append(took)

    async def timed() -> None:
        await asyncio.sleep(options.warmup)
        cpu.append(await asyncio.to_thread(server.cpu_seconds))
        await asyncio.sleep(options.seconds)
        cpu.append(await asyncio.to_thread(server.cpu_seconds))

    try:
        for conn in conns:
            await conn.open()
        await _first_error([window.run(options.warmup, options.seconds), timed(),
                            *(one(i, conn) for i, conn in enumerate(conns))])
    finally:
        for conn in conns:
            await conn.close()
    pushed.elapsed = window.elapsed
    pushed.server_cpu = (cpu[1] - cpu[0]) / window.elapsed
    return pushed


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank."""
    if not ordered:
        raise BenchError("no push completed inside the window")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


# --- servers --------------------------------------------------------------------------------------


def start_server(url: str, mode: str, wait_ms: int, log_dir: Path,
                 launched: bench.Launched) -> bench.Server:
    """``python -m syncd serve`` on a free loopback port, echo wait on (``wait_ms``) or off (0)."""
    port = benchkit.free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("SYNCD_HOST", "SYNCD_PORT", "SYNCD_WORKERS")}
    env.update(SYNCD_DATABASE_URL=url, SYNCD_AUTH_MODE="none", SYNCD_LOG_LEVEL="warning",
               SYNCD_PUSH_ECHO_WAIT_MS=str(wait_ms if mode == "on" else 0))
    benchkit.progress(f"starting syncd, echo wait {mode} "
                      f"(SYNCD_PUSH_ECHO_WAIT_MS={env['SYNCD_PUSH_ECHO_WAIT_MS']}) …")
    server = bench.Server(
        f"syncd-echo-{mode}",
        [sys.executable, "-m", "syncd", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env, port, log_dir, bench.REPO)
    launched.servers.append(server)  # stopped by PID whatever happens next
    server.wait_until(lambda: bench._http_ok(port, "/readyz"))
    return server


# --- one cell, the runs ---------------------------------------------------------------------------


@dataclass(slots=True)
class Context:
    url: str
    collection_id: uuid.UUID
    options: Options
    mp: SpawnContext
    servers: dict[str, bench.Server] = field(default_factory=dict)
    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)


def run_cell(ctx: Context, cell: Cell, mode: str, run: int) -> Sample:
    opts, server = ctx.options, ctx.servers[mode]
    benchkit.run(bench.reset_collection(ctx.url, ctx.collection_id, ""))
    before = benchkit.run(bench.count_documents(ctx.url, ctx.collection_id))
    prefix = f"r{run}{mode}-{secrets.token_hex(3)}-"
    subscribers: SubscriberProcess | None = None
    delivery = Delivery()
    try:
        if cell.subscribers:
            subscribers = SubscriberProcess(ctx.mp, SubscriberJob(
                url=f"ws://127.0.0.1:{server.port}/api/v1/sync/{COLLECTION}/stream",
                subscribers=cell.subscribers, prefix=prefix, clients=cell.clients,
                open_timeout=30.0, delivery_timeout=opts.delivery_timeout,
                within=opts.cell_timeout + 60))
            subscribers.wait_ready(120.0)
        pushed = benchkit.run(push_cell(server, cell, prefix, opts))
        if subscribers is not None:
            delivery = subscribers.finish(pushed.acked, opts.delivery_timeout + 60)
    finally:
        if subscribers is not None:
            subscribers.stop()
    acknowledged = sum(pushed.acked)
    stored = benchkit.run(bench.count_documents(ctx.url, ctx.collection_id)) - before
    where = f"{cell.key} echo wait {mode}"
    if stored != acknowledged:
        raise BenchError(f"{where}: {acknowledged} documents acknowledged, {stored} stored")
    if cell.subscribers:
        _check_delivery(where, cell, delivery, acknowledged)
    if problems := server.problems():
        raise BenchError(f"{server.name} logged errors:\n" + "\n".join(problems[-10:]))
    ordered = sorted(pushed.latencies)
    latency = cell.latency
    sample = Sample(
        p50=_percentile(ordered, 0.50) * 1000 if latency else 0.0,
        p99=_percentile(ordered, 0.99) * 1000 if latency else 0.0,
        rate=pushed.docs / pushed.elapsed, server_cpu=pushed.server_cpu,
        subscriber_cpu=delivery.cpu, resyncs=delivery.resyncs)
    figures = (f"p50 {sample.p50:6.2f} ms  p99 {sample.p99:6.2f} ms  ({len(ordered):,} pushes)"
               if latency else f"{sample.rate:9,.0f} docs/s")
    delivered = (f"  delivered {acknowledged:,} docs x {delivery.opened} streams in "
                 f"{delivery.frames:,} frames (+{delivery.catch_up:.2f} s), "
                 f"RESYNCs {delivery.resyncs}" if cell.subscribers else "")
    benchkit.progress(f"  run {run + 1} {cell.key:<9} echo wait {mode:<3} {figures}  server "
                      f"{sample.server_cpu:4.0%}{delivered}")
    return sample


def _check_delivery(where: str, cell: Cell, delivery: Delivery, acknowledged: int) -> None:
    wrong = []
    if delivery.opened != cell.subscribers:
        wrong.append(f"{delivery.opened} of {cell.subscribers} streams opened")
    if delivery.closed:
        wrong.append(f"{delivery.closed} streams ended by the server")
    if delivery.duplicates:
        wrong.append(f"{delivery.duplicates} documents received twice")
    if delivery.unexpected:
        wrong.append(f"{delivery.unexpected} documents received that nobody acknowledged")
    if delivery.unexplained:
        wrong.append(f"{delivery.unexplained} (stream, document) pairs of {acknowledged:,} "
                     f"documents x {cell.subscribers} streams never received, without a RESYNC")
    if wrong:
        raise BenchError(f"{where}: delivery check failed: " + "; ".join(wrong))


def measure(ctx: Context, launched: bench.Launched, log_dir: Path) -> None:
    opts = ctx.options
    cells = {cell.key: cell for cell in make_cells(opts)}
    for run in range(opts.runs):
        benchkit.progress(f"run {run + 1} of {opts.runs}")
        try:
            for mode in MODES:
                ctx.servers[mode] = start_server(ctx.url, mode, opts.echo_wait_ms, log_dir,
                                                 launched)
            # Compared cells run back to back; which goes first alternates, and so does the
            # order of the cells.
            for key in benchkit.rotated(tuple(cells), run):
                for mode in benchkit.rotated(MODES, run):
                    sample = run_cell(ctx, cells[key], mode, run)
                    ctx.samples.setdefault((key, mode), []).append(sample)
        finally:
            for mode in MODES:
                if mode in ctx.servers:
                    launched.stop(ctx.servers.pop(mode))


# --- the report -----------------------------------------------------------------------------------


def _median(samples: Sequence[Sample], attr: str) -> float:
    return float(statistics.median(getattr(sample, attr) for sample in samples))


def report(samples: dict[tuple[str, str], list[Sample]], options: Options, header: str) -> str:
    lines = [
        f"### Push echo wait: on (SYNCD_PUSH_ECHO_WAIT_MS={options.echo_wait_ms}) vs off (0); "
        f"median of {options.runs} run(s), {options.seconds:g} s per cell after "
        f"{options.warmup:g} s warm-up, 1 uvicorn worker",
        "",
        header,
        "",
        "| cell | metric | echo wait on | off | on/off (range) | RESYNCs on / off "
        "| server CPU on / off | subscriber client CPU on / off |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in make_cells(options):
        on, off = samples.get((cell.key, "on")), samples.get((cell.key, "off"))
        if not on or not off:
            continue
        metrics = ([("p50 ms", "p50", "{:.2f}"), ("p99 ms", "p99", "{:.2f}")] if cell.latency
                   else [("docs/s", "rate", "{:,.0f}")])
        for row, (name, attr, form) in enumerate(metrics):
            first = row == 0
            ratios = sorted(getattr(a, attr) / getattr(b, attr)
                            for a, b in zip(on, off, strict=True))
            ratio = (f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f} - {ratios[-1]:.2f})"
                     if len(ratios) > 1 else f"{ratios[0]:.2f}x")
            extra = "| | | |"
            if first:
                resyncs = (f"{sum(s.resyncs for s in on)} / {sum(s.resyncs for s in off)}"
                           if cell.subscribers else "-")
                client = (f"{_median(on, 'subscriber_cpu'):.0%} / "
                          f"{_median(off, 'subscriber_cpu'):.0%}" if cell.subscribers else "-")
                extra = (f"| {resyncs} | {_median(on, 'server_cpu'):.0%} / "
                         f"{_median(off, 'server_cpu'):.0%} | {client} |")
            lines.append(f"| {cell.label if first else ''} | {name} "
                         f"| {form.format(_median(on, attr))} | {form.format(_median(off, attr))} "
                         f"| {ratio} {extra}")
    lines += [
        "",
        "on/off: median (range) over the runs of the ratio measured within each run, where the "
        "two cells ran back to back (latency: above 1 is slower with the wait; docs/s: below 1 "
        "is slower). RESYNCs: sent to the subscribers during the cells, summed over the runs "
        "(a stream not sent an echo in time is told to RESYNC). CPU = share of one core during "
        "the measured window (server: the syncd process and its worker, PostgreSQL not "
        "included; subscriber client: the process holding the websocket subscribers).",
        "Checked in every cell: every push answered [], the table holds exactly the documents "
        "acknowledged, every subscriber received every one of them exactly once (or was told "
        "to RESYNC).",
    ]
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    cells: tuple[str, ...]
    runs: int
    seconds: float
    warmup: float
    clients: int
    batch: int
    subscribers: int
    echo_wait_ms: int
    delivery_timeout: float
    cell_timeout: float


def parse_args(argv: Sequence[str] | None) -> tuple[str | None, Options]:
    parser = benchkit.argument_parser(
        "The cost of syncd's push echo wait: push latency and throughput with "
        "SYNCD_PUSH_ECHO_WAIT_MS on and 0, without and with live subscribers of the same caller.",
        database_help="loopback or Unix-socket PostgreSQL URL of a server where a scratch "
        "database may be created (default: an embedded server in a temp dir)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run, 2 s cells")
    parser.add_argument("--cells", type=benchkit.csv_choices(CELL_KEYS), default=CELL_KEYS,
                        help="which cells")
    parser.add_argument("--runs", type=int, default=None, help="repetitions (default 3; quick 1)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="measured seconds per cell (default 10; quick 2)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="warm-up seconds per cell (default 1; quick 0.5)")
    parser.add_argument("--clients", type=int, default=8, help="pushing clients, throughput cells")
    parser.add_argument("--batch", type=int, default=bench.BATCH,
                        help="documents per push, throughput cells")
    parser.add_argument("--subscribers", type=int, default=100,
                        help="subscribers of the tput-many cell")
    parser.add_argument("--echo-wait-ms", type=int, default=500,
                        help="SYNCD_PUSH_ECHO_WAIT_MS of the 'on' server")
    parser.add_argument("--delivery-timeout", type=float, default=30.0,
                        help="seconds after the last push for every subscriber to have everything")
    parser.add_argument("--cell-timeout", type=float, default=300.0,
                        help="seconds after which a cell's clients give up (it then fails)")
    args = parser.parse_args(argv)

    def pick(value: Any, full: Any, smoke: Any) -> Any:
        return value if value is not None else (smoke if args.quick else full)

    options = Options(
        cells=args.cells,
        runs=pick(args.runs, 3, 1),
        seconds=pick(args.seconds, 10.0, 2.0),
        warmup=pick(args.warmup, 1.0, 0.5),
        clients=args.clients,
        batch=args.batch,
        subscribers=args.subscribers,
        echo_wait_ms=args.echo_wait_ms,
        delivery_timeout=args.delivery_timeout,
        cell_timeout=args.cell_timeout,
    )
    if not 1 <= options.runs <= 20 or not 0.5 <= options.seconds <= 600:
        parser.error("--runs must be 1..20 and --seconds 0.5..600")
    if not 0 <= options.warmup <= 60:
        parser.error("--warmup must be 0..60")
    if not 1 <= options.clients <= 64 or not 1 <= options.batch <= 1000:
        parser.error("--clients must be 1..64 and --batch 1..1000")
    if not 1 <= options.subscribers <= 2000 or not 1 <= options.echo_wait_ms <= 60_000:
        parser.error("--subscribers must be 1..2000 and --echo-wait-ms 1..60000")
    if not 1 <= options.delivery_timeout <= 600:
        parser.error("--delivery-timeout must be 1..600")
    if options.cell_timeout <= options.warmup + options.seconds:
        parser.error("--cell-timeout must exceed --warmup + --seconds")
    return args.database_url, options


def main(argv: Sequence[str] | None = None) -> int:
    database_url, options = parse_args(argv)
    benchkit.exit_on_signals()
    benchkit.raise_nofile_limit()
    launched = bench.Launched()
    log_dir = Path(tempfile.mkdtemp(prefix="echobench-logs-"))
    keep_logs = True
    try:
        with benchkit.scratch_database(database_url, "echobench", secrets.token_hex(3)) as url:
            header = benchkit.run(bench.describe_server(url))
            benchkit.progress(header)
            ids = bench.prepare(url)
            ctx = Context(url=url, collection_id=ids[COLLECTION], options=options,
                          mp=multiprocessing.get_context("spawn"))
            try:
                measure(ctx, launched, log_dir)
            finally:
                launched.stop_all()  # whatever an interruption left running, by PID
        keep_logs = False
    finally:
        launched.stop_all()
        if keep_logs:
            benchkit.progress(f"server logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    print(report(ctx.samples, options, header), flush=True)
    return 0


if __name__ == "__main__":
    benchkit.run_main(main)
