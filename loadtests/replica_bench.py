"""What a streaming replica changes, measured (issue #14; BENCHMARKS.md §9, docs/scaling.md).

```sh
.venv/bin/python loadtests/replica_bench.py            # ~15 min: every part, 3 runs
.venv/bin/python loadtests/replica_bench.py --quick    # smoke run, ~3 min
```

It starts everything itself on this machine: a primary and a real streaming hot standby of it
(``tests/standby.py``'s :class:`StandbyCluster`: the embedded distribution's ``pg_basebackup``,
asynchronous streaming, ``hot_standby_feedback``), and two ``syncd serve`` (1 worker each) on
127.0.0.1 over the same primary: ``direct`` without replicas and ``replica`` with
``SYNCD_DATABASE_REPLICA_URLS`` = the standby. Everything is stopped by PID on the way out.

Parts:
* ``pull``: clients (separate processes, raw HTTP/1.1 keep-alive) each pull the whole pull
  collection from checkpoint null with pages of 100 and 1000, through ``direct`` (reads on the
  primary) and through ``replica`` (reads on the standby; checked with
  ``syncd_replica_reads_total``). Every client must receive every document.
* ``push``: batch 1 and batch 100 from 1 and 8 clients, 3 setups, rotated within each run:
  ``alone`` (standby stopped: no WAL sender), ``streaming`` (standby attached, syncd without
  replicas: the WAL sender's cost) and ``replica`` (standby attached, syncd with it configured:
  plus the lag checks). Every answer must be ``[]``. While ``replica`` pushes, the standby's
  replay lag is sampled every 100 ms twice: syncd's ``syncd_replica_lag_seconds`` and
  ``syncd_replica_in_use`` from ``/metrics``, and PostgreSQL's own ``replay_lag`` from
  ``pg_stat_replication`` on the primary.
* ``pause``: replay paused on the standby for 2.5 s while one writer commits every 10 ms: when
  the node takes the replica out of rotation, what ``syncd_replica_lag_seconds`` says against the
  true lag, and when it is back after the resume.
* ``live``: one websocket subscriber of the pusher's own identity and pushes of one document one
  at a time, through ``direct`` and ``replica``: the push's answer and the delivery, from the send.
* ``heads``: the head poll (``HEADS_SQL``, one statement for all of a node's feeds) with 1, 10,
  100 and 1000 feeds, timed on the primary and on the standby over one asyncpg connection.

The machine has 2 vCPU: primary, standby, syncd and the load generator share them, so a replica
cannot add capacity here; what is measured is the cost and the behaviour, not scale-out.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import benchkit
import documents
import orjson
from bench import (
    BenchError,
    HttpConnection,
    Server,
    native,
    pull_all,
    push_batch,
    reset_collection,
)

from syncd.db.store import HEADS_SQL
from syncd.db.urls import asyncpg_dsn

REPO = Path(__file__).resolve().parent.parent
PUSH, PULL, HEADS, LIVE = "replica_push", "replica_pull", "replica_heads", "replica_live"
PULL_PREFIX = "pull-"
HEAD_PARTITIONS = 1000  # partitions of the heads collection, 10 documents each


# --- client processes -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    kind: str  # pull | push
    port: int
    collection: str
    size: int  # page (pull) or batch (push)
    start_at: float  # time.time() at which every client starts
    seconds: float = 0.0  # push: measured seconds after warmup
    warmup: float = 0.0
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class Done:
    documents: int  # pulled, or pushed within the measured window
    began: float
    ended: float


def client(job: Job) -> Done:
    return benchkit.run(_client(job))


async def _client(job: Job) -> Done:
    conn = HttpConnection(job.port)
    await conn.open()
    try:
        await asyncio.sleep(max(0.0, job.start_at - time.time()))
        endpoint = native(job.port, job.collection)
        if job.kind == "pull":
            began = time.time()
            got = await pull_all(conn, endpoint, job.size, began + 120)
            return Done(got, began, time.time())
        measured_from = job.start_at + job.warmup
        until = measured_from + job.seconds
        counted, n = 0, 0
        while (now := time.time()) < until:
            await push_batch(conn, endpoint, job.prefix, n, job.size)
            n += job.size
            if now >= measured_from:
                counted += job.size
        return Done(counted, measured_from, until)
    finally:
        await conn.close()


def run_clients(pool: concurrent.futures.ProcessPoolExecutor, jobs: list[Job]) -> list[Done]:
    return [f.result(timeout=180) for f in [pool.submit(client, job) for job in jobs]]


# --- servers, database -------------------------------------------------------------------------


def start_syncd(name: str, url: str, log_dir: Path, replica_url: str | None) -> Server:
    port = benchkit.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(SYNCD_DATABASE_URL=url, SYNCD_AUTH_MODE="none", SYNCD_LOG_LEVEL="warning")
    if replica_url is not None:
        env["SYNCD_DATABASE_REPLICA_URLS"] = replica_url
    server = Server(name, [sys.executable, "-m", "syncd", "serve", "--host", "127.0.0.1",
                           "--port", str(port), "--workers", "1"], env, port, log_dir, REPO)
    server.wait_until(lambda: _get(port, "/readyz")[0] == 200)
    return server


def _get(port: int, path: str) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return 0, ""
    finally:
        conn.close()


def metric(port: int, name: str, label: str | None = None) -> float:
    """One sample of ``name`` from the node's /metrics (summed over label values unless one is
    asked for by its replica label)."""
    _, text = _get(port, "/metrics")
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(rf'{re.escape(name)}(\{{[^}}]*\}})?\s+(\S+)', line)
        if match is None:
            continue
        if label is not None and f'replica="{label}"' not in (match.group(1) or ""):
            continue
        total += float(match.group(2))
    return total


async def sql(url: str, statement: str, *args: Any) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()


def add_collections(url: str) -> dict[str, uuid.UUID]:
    import subprocess

    for name in (PUSH, PULL, HEADS, LIVE):
        done = subprocess.run(
            [sys.executable, "-m", "syncd", "collections", "add", name, "--schema",
             str(documents.SCHEMA_PATH)], env={**os.environ, "SYNCD_DATABASE_URL": url},
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BenchError(f"collections add {name}: {done.stdout}{done.stderr}")
    ids: dict[str, uuid.UUID] = {}
    for name in (PUSH, PULL, HEADS):
        ids[name] = benchkit.run(sql(url, "SELECT id FROM syncd_collections WHERE name = $1",
                                     name))
    return ids


async def load(url: str, ids: dict[str, uuid.UUID], pull_docs: int) -> None:
    conn = await benchkit.connect(asyncpg_dsn(url), "replica-bench-load", statement_timeout="0")
    try:
        for start in range(0, pull_docs, 20_000):
            records = [(ids[PULL], "", doc_id, orjson.dumps(documents.document(doc_id)).decode())
                       for doc_id in (f"{PULL_PREFIX}{i:09d}"
                                      for i in range(start, min(pull_docs, start + 20_000)))]
            await conn.copy_records_to_table(
                "syncd_documents", columns=["collection_id", "partition", "id", "data"],
                records=records)
        small = orjson.dumps({"id": "x", "title": "t", "body": "", "done": False,
                              "priority": 0, "tags": [], "owner": "o", "updatedAt": 0}).decode()
        await conn.copy_records_to_table(
            "syncd_documents", columns=["collection_id", "partition", "id", "data"],
            records=[(ids[HEADS], f"p{p}", f"d{d}", small)
                     for p in range(HEAD_PARTITIONS) for d in range(10)])
        await conn.execute("VACUUM ANALYZE syncd_documents")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


# --- parts ---------------------------------------------------------------------------------------


@dataclass
class Results:
    values: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.values[key])


def throughput(done: list[Done]) -> float:
    elapsed = max(d.ended for d in done) - min(d.began for d in done)
    return sum(d.documents for d in done) / elapsed


def pull_part(pool: concurrent.futures.ProcessPoolExecutor, servers: dict[str, Server],
              replica_label: str, pull_docs: int, runs: int, results: Results) -> None:
    cells = [(page, clients) for page in (100, 1000) for clients in (1, 4)]
    for run in range(runs):
        for page, clients in cells:
            order = ("direct", "replica") if run % 2 == 0 else ("replica", "direct")
            per_run: dict[str, float] = {}
            for setup in order:
                server = servers[setup]
                reads_before = metric(server.port, "syncd_replica_reads_total", replica_label)
                start_at = time.time() + 0.3
                done = run_clients(pool, [Job("pull", server.port, PULL, page, start_at)
                                          for _ in range(clients)])
                if any(d.documents != pull_docs for d in done):
                    raise BenchError(f"pull {setup}: a client got {[d.documents for d in done]}"
                                     f" of {pull_docs}")
                on_replica = metric(server.port, "syncd_replica_reads_total",
                                    replica_label) - reads_before
                pages = clients * (pull_docs // page + 1)
                if setup == "replica" and on_replica < pages:
                    results.notes.append(f"pull page {page} x{clients} run {run}: only "
                                         f"{on_replica:.0f} of {pages} pages on the replica")
                per_run[setup] = throughput(done)
                results.add(f"pull {page} x{clients} {setup}", per_run[setup])
            results.add(f"pull {page} x{clients} ratio",
                        per_run["replica"] / per_run["direct"])
            benchkit.progress(f"pull page {page} x{clients} run {run}: "
                              + ", ".join(f"{k} {v:,.0f} docs/s" for k, v in per_run.items()))


async def sample_lag(port: int, label: str, primary_url: str, stop: asyncio.Event,
                     into: dict[str, list[float]]) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(primary_url))
    try:
        while not stop.is_set():
            lag = await asyncio.to_thread(metric, port, "syncd_replica_lag_seconds", label)
            in_use = await asyncio.to_thread(metric, port, "syncd_replica_in_use", label)
            pg = await conn.fetchval(
                "SELECT COALESCE(EXTRACT(EPOCH FROM max(replay_lag)), 0)::float8"
                " FROM pg_stat_replication")
            bytes_behind = await conn.fetchval(
                "SELECT COALESCE(max(pg_current_wal_lsn() - replay_lsn), 0)::float8"
                " FROM pg_stat_replication")
            into["syncd"].append(lag)
            into["in_use"].append(in_use)
            into["pg"].append(pg)
            into["bytes"].append(bytes_behind)
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def replication_cpu(cluster: Any) -> tuple[float, float]:
    """CPU seconds so far of the primary's WAL senders and of every standby process (replay,
    WAL receiver, ...), and of all the primary's processes."""
    import psutil  # type: ignore[import-untyped]

    def postmaster(data_dir: Path) -> psutil.Process | None:
        try:
            return psutil.Process(int((data_dir / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, psutil.Error):
            return None

    def cpu(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
            return float(times.user + times.system)
        except psutil.Error:
            return 0.0

    replication, primary = 0.0, 0.0
    main = postmaster(cluster.root / "primary" / "pgdata")
    if main is not None:
        for child in [main, *main.children()]:
            used = cpu(child)
            primary += used
            try:
                if "walsender" in " ".join(child.cmdline()):
                    replication += used
            except psutil.Error:
                pass
    standby = postmaster(cluster.standby_dir)
    if standby is not None:
        replication += sum(cpu(p) for p in [standby, *standby.children()])
    return replication, primary


def push_part(pool: concurrent.futures.ProcessPoolExecutor, servers: dict[str, Server],
              cluster: Any, push_id: uuid.UUID, replica_label: str, runs: int, seconds: float,
              results: Results) -> None:
    cells = [(1, 1), (1, 8), (100, 1), (100, 8)]
    for run in range(runs):
        attached = ("streaming", "replica") if run % 2 == 0 else ("replica", "streaming")
        # alone first on even runs, last on odd ones
        order = (("alone", *attached) if run % 2 == 0 else (*attached, "alone"))
        for setup in order:
            if setup == "alone":
                cluster.stop_standby()
            try:
                for batch, clients in cells:
                    server = servers["replica" if setup == "replica" else "direct"]
                    benchkit.run(reset_collection(cluster.primary_url, push_id, ""))
                    start_at = time.time() + 0.3
                    token = uuid.uuid4().hex[:8]
                    jobs = [Job("push", server.port, PUSH, batch, start_at, seconds, 1.0,
                                f"{token}-{c}-") for c in range(clients)]
                    lag: dict[str, list[float]] = {"syncd": [], "pg": [], "in_use": [],
                                                   "bytes": []}
                    cpu_before = replication_cpu(cluster)
                    if setup == "replica":
                        done = benchkit.run(_push_sampled(pool, jobs, server.port,
                                                          replica_label, cluster.primary_url,
                                                          lag))
                    else:
                        done = run_clients(pool, jobs)
                    stored = benchkit.run(sql(cluster.primary_url,
                                              "SELECT count(*) FROM syncd_documents"
                                              " WHERE collection_id = $1", push_id))
                    if stored < sum(d.documents for d in done):
                        raise BenchError(f"push {setup}: {stored} stored, fewer than acked")
                    rate = throughput(done)
                    key = f"push b{batch} x{clients}"
                    results.add(f"{key} {setup}", rate)
                    cpu_after = replication_cpu(cluster)
                    pushed = sum(d.documents for d in done) or 1
                    # per document over the whole cell (warm-up included on both sides)
                    span = seconds + 1.0
                    factor = 1e6 / (pushed * span / seconds)
                    results.add(f"{key} {setup} replication us/doc",
                                (cpu_after[0] - cpu_before[0]) * factor)
                    results.add(f"{key} {setup} primary us/doc",
                                (cpu_after[1] - cpu_before[1]) * factor)
                    line = f"{key} {setup} run {run}: {rate:,.0f} docs/s"
                    if setup == "replica" and lag["syncd"]:
                        results.add(f"{key} lag syncd max", max(lag["syncd"]))
                        results.add(f"{key} lag syncd median", statistics.median(lag["syncd"]))
                        results.add(f"{key} lag pg max", max(lag["pg"]))
                        results.add(f"{key} lag pg median", statistics.median(lag["pg"]))
                        results.add(f"{key} bytes behind max", max(lag["bytes"]))
                        results.add(f"{key} out of rotation samples",
                                    sum(1 for v in lag["in_use"] if v < 1))
                        results.add(f"{key} lag samples", len(lag["in_use"]))
                        line += (f"; lag syncd max {max(lag['syncd']) * 1000:.0f} ms, pg max "
                                 f"{max(lag['pg']) * 1000:.1f} ms, out of rotation in "
                                 f"{sum(1 for v in lag['in_use'] if v < 1)} of "
                                 f"{len(lag['in_use'])} samples")
                    benchkit.progress(line)
            finally:
                if setup == "alone":
                    cluster.start_standby()
                    cluster.wait_replayed(120)
                    # the replica node takes it back into rotation at its next check
                    deadline = time.time() + 10
                    while (metric(servers["replica"].port, "syncd_replica_in_use",
                                  replica_label) < 1 and time.time() < deadline):
                        time.sleep(0.1)
        for batch, clients in cells:
            key = f"push b{batch} x{clients}"
            for setup in ("streaming", "replica"):
                results.add(f"{key} {setup}/alone",
                            results.values[f"{key} {setup}"][-1]
                            / results.values[f"{key} alone"][-1])


async def _push_sampled(pool: concurrent.futures.ProcessPoolExecutor, jobs: list[Job],
                        port: int, label: str, primary_url: str,
                        lag: dict[str, list[float]]) -> list[Done]:
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_lag(port, label, primary_url, stop, lag))
    # Sample only inside the measured window (after the warm-up).
    await asyncio.sleep(max(0.0, jobs[0].start_at + jobs[0].warmup - time.time()))
    for values in lag.values():
        values.clear()
    try:
        return await asyncio.to_thread(run_clients, pool, jobs)
    finally:
        stop.set()
        await sampler


async def time_heads(url: str, heads_id: uuid.UUID, feeds: int, seconds: float) -> float:
    """Milliseconds per head-poll statement with ``feeds`` feeds (median over batches of 20)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        ids, parts = [heads_id] * feeds, [f"p{p}" for p in range(feeds)]
        rows = await conn.fetch(HEADS_SQL, ids, parts)
        if len(rows) != feeds:
            raise BenchError(f"head poll of {feeds} feeds answered {len(rows)} rows")
        per_batch: list[float] = []
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            began = time.perf_counter()
            for _ in range(20):
                await conn.fetch(HEADS_SQL, ids, parts)
            per_batch.append((time.perf_counter() - began) / 20 * 1000)
        return statistics.median(per_batch)
    finally:
        await conn.close()


def heads_part(cluster: Any, heads_id: uuid.UUID, runs: int, seconds: float,
               results: Results) -> None:
    for run in range(runs):
        for feeds in (1, 10, 100, 1000):
            for where, url in (("primary", cluster.primary_url),
                               ("standby", cluster.standby_url)):
                ms = benchkit.run(time_heads(url, heads_id, feeds, seconds))
                results.add(f"heads {feeds} {where}", ms)
            benchkit.progress(f"head poll, {feeds} feeds, run {run}: primary "
                              f"{results.values[f'heads {feeds} primary'][-1]:.3f} ms, standby "
                              f"{results.values[f'heads {feeds} standby'][-1]:.3f} ms")


async def pause_once(cluster: Any, port: int, label: str, pause: float,
                     max_lag: float) -> dict[str, float]:
    """Pause the standby's replay for ``pause`` s while one writer commits every 10 ms: when
    syncd takes it out of rotation, what its lag metric says against PostgreSQL's own, and when
    it is back in rotation after the replay resumes."""
    writer = await asyncpg.connect(asyncpg_dsn(cluster.primary_url))
    standby = await asyncpg.connect(asyncpg_dsn(cluster.standby_url))
    stop = asyncio.Event()

    async def write() -> None:
        n = 0
        while not stop.is_set():
            await writer.execute("SELECT pg_logical_emit_message(false, 'bench', $1)", str(n))
            await writer.execute("SELECT txid_current()")  # one commit that writes WAL
            n += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(write())
    out: dict[str, float] = {}
    try:
        await asyncio.sleep(0.5)
        await standby.execute("SELECT pg_wal_replay_pause()")
        paused_at = time.monotonic()
        while time.monotonic() - paused_at < pause:
            in_use = await asyncio.to_thread(metric, port, "syncd_replica_in_use", label)
            if in_use < 1 and "out after" not in out:
                out["out after"] = time.monotonic() - paused_at
                out["syncd lag when out"] = await asyncio.to_thread(
                    metric, port, "syncd_replica_lag_seconds", label)
            await asyncio.sleep(0.02)
        out["syncd lag at resume"] = await asyncio.to_thread(
            metric, port, "syncd_replica_lag_seconds", label)
        out["true lag at resume"] = time.monotonic() - paused_at
        await standby.execute("SELECT pg_wal_replay_resume()")
        resumed_at = time.monotonic()
        while time.monotonic() - resumed_at < 10:
            if await asyncio.to_thread(metric, port, "syncd_replica_in_use", label) >= 1:
                out["back after"] = time.monotonic() - resumed_at
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await task
        await writer.close()
        await standby.close()
    out["out after - max lag"] = out.get("out after", float("nan")) - max_lag
    return out


def pause_part(cluster: Any, servers: dict[str, Server], label: str, runs: int,
               results: Results) -> None:
    for run in range(runs):
        got = benchkit.run(pause_once(cluster, servers["replica"].port, label, 2.5, 1.0))
        for key, value in got.items():
            results.add(f"pause {key}", value)
        benchkit.progress(f"replay paused, run {run}: "
                          + ", ".join(f"{k} {v:.3f}" for k, v in got.items()))


async def live_once(port: int, token: str, pushes: int) -> tuple[list[float], list[float]]:
    """One websocket subscriber (the pusher's own identity: auth mode none) and ``pushes``
    sequential pushes of one document: each push's answer time and the time until the
    subscriber received the document, both from the moment the push was sent (ms)."""
    import websockets

    answered: list[float] = []
    delivered: list[float] = []
    conn = HttpConnection(port)
    endpoint = native(port, LIVE)
    async with websockets.connect(f"ws://127.0.0.1:{port}/api/v1/sync/{LIVE}/stream",
                                  open_timeout=10) as ws:
        first = await asyncio.wait_for(ws.recv(), 10)
        if first != '"RESYNC"':
            raise BenchError(f"live: first message {first!r}")
        seen: dict[str, float] = {}
        reader_error: list[BaseException] = []
        arrived = asyncio.Event()

        async def read() -> None:
            try:
                async for message in ws:
                    if message == '"RESYNC"':
                        raise BenchError("live: RESYNC during the run")
                    for doc in orjson.loads(message)["documents"]:
                        seen[doc["id"]] = time.perf_counter()
                    arrived.set()
            except websockets.ConnectionClosed:
                pass
            except BaseException as exc:
                reader_error.append(exc)
            arrived.set()

        reading = asyncio.create_task(read())
        try:
            for i in range(pushes):
                doc_id = f"{token}{i:09d}"
                sent = time.perf_counter()
                await push_batch(conn, endpoint, token, i, 1)
                answered.append((time.perf_counter() - sent) * 1000)
                until = time.perf_counter() + 5
                while doc_id not in seen and not reader_error and reading.done() is False:
                    arrived.clear()
                    try:
                        await asyncio.wait_for(arrived.wait(), until - time.perf_counter())
                    except TimeoutError:
                        break
                if reader_error:
                    raise reader_error[0]
                if doc_id not in seen:
                    raise BenchError(f"live: {doc_id} not delivered within 5 s")
                delivered.append((seen[doc_id] - sent) * 1000)
                await asyncio.sleep(0.01)
        finally:
            reading.cancel()
            await conn.close()
    return answered, delivered


def live_part(servers: dict[str, Server], runs: int, pushes: int, results: Results) -> None:
    for run in range(runs):
        order = ("direct", "replica") if run % 2 == 0 else ("replica", "direct")
        for setup in order:
            answered, delivered = benchkit.run(live_once(servers[setup].port,
                                                         f"{setup}{run}-", pushes))
            q = statistics.quantiles
            for name, values in (("answer", answered), ("delivery", delivered)):
                results.add(f"live {setup} {name} p50", statistics.median(values))
                results.add(f"live {setup} {name} p99", q(values, n=100)[98])
            benchkit.progress(f"live {setup} run {run}: push answered p50 "
                              f"{statistics.median(answered):.1f} ms, delivered p50 "
                              f"{statistics.median(delivered):.1f} ms")


# --- report --------------------------------------------------------------------------------------


def report(results: Results, parts: tuple[str, ...], pull_docs: int, runs: int) -> str:
    out: list[str] = []
    values = results.values

    def med(key: str) -> float:
        return statistics.median(values[key])

    def rng(key: str) -> str:
        return f"{min(values[key]):,.0f} - {max(values[key]):,.0f}"

    if "pull" in parts:
        out += [f"**Pull** (docs/s over whole passes of {pull_docs:,} docs; median of {runs} "
                "runs)", "",
                "| page | clients | direct (primary) | range | via replica (standby) | range "
                "| replica / direct (range) |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for page in (100, 1000):
            for clients in (1, 4):
                k = f"pull {page} x{clients}"
                r = values[f"{k} ratio"]
                out.append(f"| {page} | {clients} | {med(k + ' direct'):,.0f} | "
                           f"{rng(k + ' direct')} | {med(k + ' replica'):,.0f} | "
                           f"{rng(k + ' replica')} | {med(k + ' ratio'):.2f}x "
                           f"({min(r):.2f} - {max(r):.2f}) |")
        out.append("")
    if "push" in parts:
        out += [f"**Push** (docs/s, median of {runs} runs)", "",
                "| batch | clients | alone (no standby) | streaming (standby, syncd without) "
                "| replica (syncd with it) | streaming / alone | replica / alone |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        for batch, clients in ((1, 1), (1, 8), (100, 1), (100, 8)):
            k = f"push b{batch} x{clients}"
            out.append(f"| {batch} | {clients} | {med(k + ' alone'):,.0f} | "
                       f"{med(k + ' streaming'):,.0f} | {med(k + ' replica'):,.0f} | "
                       f"{med(k + ' streaming/alone'):.2f}x | {med(k + ' replica/alone'):.2f}x |")
        out += ["", "**CPU per pushed document** (µs of one core; WAL sender + every standby "
                "process, and all the primary's processes; median of runs)", "",
                "| batch | clients | replication, streaming | replication, replica | primary, "
                "alone | primary, streaming | replication / primary (streaming) |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        for batch, clients in ((1, 1), (1, 8), (100, 1), (100, 8)):
            k = f"push b{batch} x{clients}"
            rs, rr = med(f"{k} streaming replication us/doc"), med(f"{k} replica replication "
                                                                   "us/doc")
            pa, ps = med(f"{k} alone primary us/doc"), med(f"{k} streaming primary us/doc")
            out.append(f"| {batch} | {clients} | {rs:.1f} | {rr:.1f} | {pa:.1f} | {ps:.1f} | "
                       f"{rs / ps:.2f} |")
        out += ["", "**Replay lag while `replica` pushes** (samples every 100 ms; max and median "
                "over the measured window, median over runs)", "",
                "| batch | clients | syncd_replica_lag_seconds max / median ms "
                "| pg_stat_replication replay_lag max / median ms | WAL bytes behind, max "
                "| out of rotation |",
                "|---:|---:|---:|---:|---:|---:|"]
        for batch, clients in ((1, 1), (1, 8), (100, 1), (100, 8)):
            k = f"push b{batch} x{clients}"
            out.append(
                f"| {batch} | {clients} | {med(k + ' lag syncd max') * 1000:.0f} / "
                f"{med(k + ' lag syncd median') * 1000:.0f} | "
                f"{med(k + ' lag pg max') * 1000:.1f} / {med(k + ' lag pg median') * 1000:.1f} | "
                f"{med(k + ' bytes behind max') / 1024:,.0f} KiB | "
                f"{sum(values[k + ' out of rotation samples']):.0f} of "
                f"{sum(values[k + ' lag samples']):.0f} samples |")
        out.append("")
    if "pause" in parts:
        out += ["**Replay paused 2.5 s** (one writer commits every 10 ms; "
                "SYNCD_REPLICA_MAX_LAG_MS=1000, SYNCD_REPLICA_CHECK_MS=250; seconds, median "
                f"of {runs} runs)", "", "| measure | median | range |", "|---|---:|---:|"]
        for key in ("out after", "syncd lag when out", "syncd lag at resume",
                    "true lag at resume", "back after"):
            if f"pause {key}" in values:
                v = values[f"pause {key}"]
                out.append(f"| {key} | {med('pause ' + key):.3f} | {min(v):.3f} - "
                           f"{max(v):.3f} |")
        out.append("")
    if "live" in parts:
        out += ["**Live: one subscriber of the pusher's own identity, pushes of 1 document one "
                f"at a time** (ms from push sent; median of {runs} runs)", "",
                "| node | push answered p50 / p99 | delivered p50 / p99 |", "|---|---:|---:|"]
        for setup in ("direct", "replica"):
            out.append(f"| {setup} | {med(f'live {setup} answer p50'):.1f} / "
                       f"{med(f'live {setup} answer p99'):.1f} | "
                       f"{med(f'live {setup} delivery p50'):.1f} / "
                       f"{med(f'live {setup} delivery p99'):.1f} |")
        out.append("")
    if "heads" in parts:
        out += [f"**Head poll** (`HEADS_SQL`, ms per statement, one connection, median of {runs}"
                " runs)", "", "| feeds | primary ms | standby ms | standby / primary |",
                "|---:|---:|---:|---:|"]
        for feeds in (1, 10, 100, 1000):
            p, s = med(f"heads {feeds} primary"), med(f"heads {feeds} standby")
            out.append(f"| {feeds} | {p:.3f} | {s:.3f} | {s / p:.2f}x |")
        out.append("")
    out += [f"- {note}" for note in results.notes]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, short cells")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per push cell, after 1 s")
    parser.add_argument("--pull-docs", type=int, default=50_000)
    parts = ("pull", "push", "pause", "live", "heads")
    parser.add_argument("--parts", type=benchkit.csv_choices(parts), default=parts)
    options = parser.parse_args()
    if options.quick:
        options.runs, options.seconds, options.pull_docs = 1, 2.0, 10_000
    benchkit.exit_on_signals()
    benchkit.raise_nofile_limit()
    sys.path.insert(0, str(REPO))
    from tests.standby import StandbyCluster

    benchkit.progress("starting a primary and a streaming standby …")
    cluster = StandbyCluster()
    servers: dict[str, Server] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="replica-bench-"))
    benchkit.progress(f"server logs in {log_dir} (removed after a successful run)")
    results = Results()
    try:
        # The standby is stopped during the "alone" cells: keep the WAL it will need (no slot).
        benchkit.run(sql(cluster.primary_url, "ALTER SYSTEM SET wal_keep_size = '4GB'"))
        benchkit.run(sql(cluster.primary_url, "SELECT pg_reload_conf()"))
        ids = add_collections(cluster.primary_url)
        benchkit.run(load(cluster.primary_url, ids, options.pull_docs))
        cluster.wait_replayed(120)
        servers["direct"] = start_syncd("direct", cluster.primary_url, log_dir, None)
        servers["replica"] = start_syncd("replica", cluster.primary_url, log_dir,
                                         cluster.standby_url)
        label = f"{cluster.standby_dir}/syncd_replicated"
        deadline = time.time() + 10
        while (metric(servers["replica"].port, "syncd_replica_in_use", label) < 1
               and time.time() < deadline):
            time.sleep(0.1)
        if metric(servers["replica"].port, "syncd_replica_in_use", label) < 1:
            raise BenchError("the replica never came into rotation:\n"
                             + servers["replica"].log_tail())
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(8, mp_context=context) as pool:
            list(pool.map(time.sleep, [0.2] * 8))  # spawn the processes before measuring
            if "pull" in options.parts:
                pull_part(pool, servers, label, options.pull_docs, options.runs, results)
            if "push" in options.parts:
                push_part(pool, servers, cluster, ids[PUSH], label, options.runs,
                          options.seconds, results)
        if "live" in options.parts:
            live_part(servers, options.runs, 100 if options.quick else 200, results)
        if "pause" in options.parts:
            pause_part(cluster, servers, label, options.runs, results)
        if "heads" in options.parts:
            heads_part(cluster, ids[HEADS], options.runs, 2.0 if options.quick else 4.0,
                       results)
        for server in servers.values():
            for problem in server.problems()[:5]:
                results.notes.append(f"{server.name} logged: {problem}")
    finally:
        for server in servers.values():
            server.stop()
        cluster.close()
    shutil.rmtree(log_dir, ignore_errors=True)  # kept on a failure
    print(f"replica_bench.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{os.cpu_count()} CPUs; runs {options.runs}, push cells {options.seconds:g} s "
          "after 1 s warm-up\n")
    print(report(results, options.parts, options.pull_docs, options.runs))
    return 0


if __name__ == "__main__":
    benchkit.run_main(main)
