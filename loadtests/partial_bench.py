#!/usr/bin/env python3
"""Issue #11's three performance figures for partial replication (docs/partial-sync.md).

One run on one machine, every figure a median over ``--runs``, ratios measured within a run
(compared cells back to back, in an order rotated every run). Parts (``--parts``):

* **pull** — a filtered pull of 1 % of a 1,000,000-document partition. Collection ``pb_pull_1m``
  (filters ``listId`` and ``region`` declared) holds 1,000,000 documents whose ``listId`` is
  ``l<i % 100>``: list ``l0`` is 10,000 documents, spread evenly through the change order.
  Collection ``pb_pull_100k`` holds 100,000 documents of which the same 10,000 are ``l0`` (every
  10th) and the other 90,000 spread over ``l1``-``l99``: the *same* filtered pull (10,000
  documents) with 90 % fewer others beside it. Rows are loaded with ``INSERT … SELECT
  generate_series`` straight into ``syncd_documents`` after the collections were registered
  (``python -m syncd collections add … --access``, which builds the partial indexes), so the
  ordering trigger stamps them; then ``VACUUM ANALYZE`` and ``CHECKPOINT``. Cells (one client, one
  connection, pages of ``--page`` = 1000, from the origin until the 10,000 documents are in, no
  final empty page for any of them; a sample repeats whole passes for ``--pull-seconds``):

  - *syncd filtered*: ``GET /api/v1/sync/pb_pull_1m?filter={"listId":"l0"}&limit=1000`` then
    with each answer's checkpoint, and the same on ``pb_pull_100k``; every document received is
    checked to be an ``l0`` document, each exactly once;
  - *syncd unfiltered*: ``GET /api/v1/sync/pb_pull_1m?limit=1000`` for the first 10,000
    documents of the partition (the comparable number of documents);
  - *limit filtered*: syncd's own filtered statement (``syncd.db.filtered.pull_sql``, parameters
    as ``FilteredReads.pull`` sends them, the floor as ``PartialPulls.pull_filter`` keeps it)
    run with asyncpg, the JSON texts joined into a response body; on both collections;
  - *limit unfiltered*: ``syncd.db.store.PULL_SQL`` the same way (as bench.py's limit pull).

  It also prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the filtered statement's first and a middle
  page on both collections.

* **push** — the cost of declared fields on pushes. Two collections with the same schema
  (``loadtests/partial_schema.json``: bench_schema.json plus ``listId`` and ``region``):
  ``pb_push_filtered`` declares both fields (two partial expression indexes on the documents,
  two on the move records, the move-out trigger), ``pb_push_plain`` none. ``--clients`` (4)
  concurrent clients push through syncd's native API (``syncd serve``, 1 uvicorn worker) for
  ``--seconds`` after ``--warmup``: new documents in batches of 1 and of 100, and updates in
  batches of 100 of documents the client created before the cell (2,000 per client) where
  10 % — or all — of the updated documents change ``listId`` (in the filtered collection each
  such change writes a move-out record). Every answer must be ``[]``; afterwards the table
  holds what was acknowledged, and the move records counted are reported.

* **live** — 1,000 native websocket subscribers (``/api/v1/sync/pb_live/stream?filter=…``)
  spread over 100 filters ``{"listId": "l<k>"}`` (10 each) on one partition, in a client process
  of their own; ``--pushes`` single-document pushes, one at a time: a new document in a random
  list, or (``--move-share``, 25 %) an existing document moved to another list (its old list's
  subscribers must get its deletion placeholder, the new list's the document). Latency of each
  (subscriber, expected frame) pair from the moment the push was sent (and from its answer);
  every expected frame must arrive (within ``--delivery-timeout``), nothing outside a
  subscriber's filter may arrive (counted: a document or placeholder whose ``listId`` is not the
  subscriber's), and duplicates are counted. The next push waits until every expected frame of
  the previous one arrived, then 10-50 ms. Also reported: syncd's CPU per push, latency by
  frame kind (new document, moved in, move-out placeholder), and what one wake-up of every
  filtered feed costs in SQL alone (syncd's filtered statement once per filter, from the head,
  on one connection). ``--live-filters`` and ``--subscribers`` set how many filters and
  subscribers (``--live-filters 10 --subscribers 100`` keeps 10 per filter); ``--generic-plans``
  is an experiment: ``plan_cache_mode = force_generic_plan`` on the scratch database.

Full run (the figures in BENCHMARKS.md §8; ~20 minutes on 2 vCPUs)::

    .venv/bin/python loadtests/partial_bench.py

Smoke run::

    .venv/bin/python loadtests/partial_bench.py --quick

The database is an embedded PostgreSQL in a temporary directory, or a scratch database
``partialbench_<token>`` created on a loopback ``--database-url`` and dropped afterwards.
Everything started (syncd, the subscriber process, the embedded PostgreSQL) is stopped by PID
when the script ends, also on Ctrl-C, SIGTERM or an error. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import bench
import benchkit
import documents
import orjson
import psutil  # type: ignore[import-untyped]

from syncd.db.filtered import NO_FLOOR, pull_sql, route_sql
from syncd.db.store import PULL_SQL, PUSH_SQL
from syncd.db.urls import asyncpg_dsn

SCHEMA_PATH = Path(__file__).with_name("partial_schema.json")
FILTERS_RULE: dict[str, Any] = {"filters": {"listId": {}, "region": {}}}
PARTS: tuple[str, ...] = ("pull", "push", "live")

PULL_BIG, PULL_SMALL = "pb_pull_1m", "pb_pull_100k"
PUSH_FILTERED, PUSH_PLAIN = "pb_push_filtered", "pb_push_plain"
LIVE = "pb_live"
TARGET_LIST = "l0"
TARGET_DOCS = 10_000
LOAD_CHUNK = 100_000
BODY = documents._BODY
MAX_PASSES = 2_000
UPDATE_POOL = 2_000  # documents per client for the update cells
LISTS = 100


class BenchError(bench.BenchError):
    """A wrong answer or a lost frame: the figures would be meaningless."""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f} - {max(values):.2f}"


# --- the database ---------------------------------------------------------------------------------


def register(url: str, name: str, filters: bool, tmp: Path) -> None:
    command = [sys.executable, "-m", "syncd", "collections", "add", name,
               "--schema", str(SCHEMA_PATH)]
    if filters:
        rule = tmp / "access.json"
        rule.write_text(json.dumps(FILTERS_RULE))
        command += ["--access", str(rule)]
    done = subprocess.run(command, env={**os.environ, "SYNCD_DATABASE_URL": url}, cwd=bench.REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


LOAD_SQL = """
INSERT INTO syncd_documents (collection_id, partition, id, data)
SELECT $1::uuid, '', 'd' || lpad(i::text, 9, '0'),
       jsonb_build_object(
           'id', 'd' || lpad(i::text, 9, '0'), 'title', 'document ' || i, 'body', $2::text,
           'done', false, 'priority', i % 10, 'tags', '["bench", "rxdb", "v0"]'::jsonb,
           'owner', 'bench', 'updatedAt', 1700000000000 + i,
           'listId', {list_expr}, 'region', 'r' || (i % 5))
FROM generate_series($3::int, $4::int) AS i
"""
BIG_LIST = "'l' || (i % 100)"  # l0 = every 100th: 10,000 of 1,000,000
SMALL_LIST = "CASE WHEN i % 10 = 0 THEN 'l0' ELSE 'l' || (1 + i % 99) END"  # l0: 10,000 of 100k


async def load(dsn: str, collection_id: uuid.UUID, count: int, list_expr: str) -> float:
    conn = await benchkit.connect(dsn, "partialbench-load", statement_timeout="0")
    started = time.perf_counter()
    try:
        sql = LOAD_SQL.format(list_expr=list_expr)
        for start in range(0, count, LOAD_CHUNK):
            end = min(count, start + LOAD_CHUNK) - 1
            await conn.execute(sql, collection_id, BODY, start, end)
            benchkit.progress(f"  loaded {end + 1:,} of {count:,}")
        took = time.perf_counter() - started
        await conn.execute("VACUUM ANALYZE syncd_documents")
        await conn.execute("CHECKPOINT")
        return took
    finally:
        await conn.close()


async def force_generic_plans(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = "
            "force_generic_plan', current_database()); END $$")
    finally:
        await conn.close()


async def collection_ids(dsn: str) -> dict[str, uuid.UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["name"]: r["id"] for r in await conn.fetch(
            "SELECT name, id FROM syncd_collections")}
    finally:
        await conn.close()


# --- part 1: pulls --------------------------------------------------------------------------------


def filter_query(flt: dict[str, Any]) -> str:
    return quote(orjson.dumps(flt).decode(), safe="")


async def http_pass(conn: bench.HttpConnection, collection: str, flt: dict[str, Any] | None,
                    want: int, page: int, check: bool) -> int:
    """One pull from the origin until ``want`` documents are in (or a short page)."""
    base = f"/api/v1/sync/{collection}?limit={page}"
    if flt is not None:
        base += "&filter=" + filter_query(flt)
    checkpoint: Any = None
    got = 0
    seen: set[str] = set()
    for _ in range(want // page + 10):
        target = base if checkpoint is None else base + "&checkpoint=" + quote(
            orjson.dumps(checkpoint).decode(), safe="")
        status, answer = await conn.request("GET", target)
        if status != 200:
            raise BenchError(f"pull {target} answered {status} {answer[:300]!r}")
        body = orjson.loads(answer)
        docs = body["documents"]
        if check:
            for doc in docs:
                if flt is not None and (doc.get("listId") != flt["listId"] or doc.get("_deleted")):
                    raise BenchError(f"filtered pull returned {doc['id']} of {doc.get('listId')}")
                if doc["id"] in seen:
                    raise BenchError(f"pull returned {doc['id']} twice")
                seen.add(doc["id"])
        got += len(docs)
        checkpoint = body["checkpoint"]
        if got >= want or len(docs) < page:
            return got
    raise BenchError("pull did not end")


async def raw_pass(conn: Any, collection_id: uuid.UUID, filtered: bool, want: int,
                   page: int) -> int:
    """syncd's statement, no HTTP: pages joined into a body as syncd's page_body does."""
    xid, seq, got = 0, 0, 0
    floor: int | None = None
    sql = pull_sql(collection_id, ("listId",), "listId")
    for _ in range(want // page + 10):
        if filtered:
            records = await conn.fetch(sql, "", xid, seq, page,
                                       NO_FLOOR if floor is None else floor,
                                       [orjson.dumps(TARGET_LIST).decode()])
            if floor is None:
                floor = records[0][0]
            rows = [(r[3], r[4], r[5]) for r in records if r[1] is not None]
        else:
            rows = [(r[0], r[1], r[2]) for r in
                    await conn.fetch(PULL_SQL, collection_id, "", xid, seq, page)]
        if rows:
            xid, seq = rows[-1][1], rows[-1][2]
            if filtered and floor is not None and xid >= floor:
                floor = 0
        body = (b'{"documents":[' + ",".join(r[0] for r in rows).encode()
                + b'],"checkpoint":' + orjson.dumps({"xid": xid, "seq": seq}) + b"}")
        del body
        got += len(rows)
        if got >= want or len(rows) < page:
            return got
    raise BenchError("raw pull did not end")


@dataclass(frozen=True, slots=True)
class PullCell:
    key: str
    label: str
    collection: str
    filtered: bool
    raw: bool


PULL_CELLS = (
    PullCell("http-f-1m", "syncd HTTP, filtered (l0 = 1 % of 1,000,000)", PULL_BIG, True, False),
    PullCell("http-f-100k", "syncd HTTP, filtered (l0 = 10,000 of 100,000)", PULL_SMALL, True,
             False),
    PullCell("http-u-1m", "syncd HTTP, unfiltered (first 10,000 of 1,000,000)", PULL_BIG, False,
             False),
    PullCell("raw-f-1m", "limit (asyncpg, pull_sql), filtered, 1,000,000", PULL_BIG, True, True),
    PullCell("raw-f-100k", "limit (asyncpg, pull_sql), filtered, 100,000", PULL_SMALL, True, True),
    PullCell("raw-u-1m", "limit (asyncpg, PULL_SQL), unfiltered, 1,000,000", PULL_BIG, False,
             True),
)


async def pull_sample(cell: PullCell, port: int, dsn: str, ids: dict[str, uuid.UUID],
                      seconds: float, page: int) -> tuple[float, int]:
    flt = {"listId": TARGET_LIST} if cell.filtered else None
    if cell.raw:
        conn = await benchkit.connect(dsn, "partialbench-limit")

        async def once(check: bool) -> int:
            return await raw_pass(conn, ids[cell.collection], cell.filtered, TARGET_DOCS, page)
    else:
        conn = bench.HttpConnection(port)
        await conn.open()

        async def once(check: bool) -> int:
            return await http_pass(conn, cell.collection, flt, TARGET_DOCS, page, check)
    try:
        got = await once(True)  # warm-up pass, checked
        if got != TARGET_DOCS:
            raise BenchError(f"{cell.key}: a pass received {got} documents, not {TARGET_DOCS}")
        docs, passes = 0, 0
        started = time.perf_counter()
        while passes < MAX_PASSES and time.perf_counter() - started < seconds:
            docs += await once(False)
            passes += 1
        return docs / (time.perf_counter() - started), passes
    finally:
        await conn.close()


EXPLAIN_PAGES = (0, 5)


async def explain_filtered(dsn: str, ids: dict[str, uuid.UUID], page: int) -> str:
    conn = await benchkit.connect(dsn, "partialbench-explain")
    out = []
    try:
        for name in (PULL_BIG, PULL_SMALL):
            cid = ids[name]
            sql = pull_sql(cid, ("listId",), "listId")
            values = [orjson.dumps(TARGET_LIST).decode()]
            xid, seq, floor = 0, 0, NO_FLOOR
            for number in range(max(EXPLAIN_PAGES) + 1):
                if number in EXPLAIN_PAGES:
                    plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, "",
                                            xid, seq, page, floor, values)
                    text = "\n".join(r[0] for r in plan)
                    out.append(f"--- {name}, page {number + 1} (from xid {xid}, seq {seq})\n"
                               f"{text}")
                records = await conn.fetch(sql, "", xid, seq, page, floor, values)
                if floor == NO_FLOOR:
                    floor = records[0][0]
                if records[-1][4] is None:
                    break
                xid, seq = records[-1][4], records[-1][5]
    finally:
        await conn.close()
    return "\n".join(out)


def pull_part(ctx: Context) -> str:
    opts = ctx.options
    ids = ctx.ids
    samples: dict[str, list[float]] = {}
    server = bench.start_syncd(ctx.url, 1, ctx.log_dir)
    ctx.launched.servers.append(server)
    try:
        keys = tuple(c.key for c in PULL_CELLS)
        cells = {c.key: c for c in PULL_CELLS}
        for run in range(opts.runs):
            for key in benchkit.rotated(keys, run):
                rate, passes = benchkit.run(pull_sample(cells[key], server.port, ctx.dsn, ids,
                                                        opts.pull_seconds, opts.page))
                samples.setdefault(key, []).append(rate)
                benchkit.progress(f"  run {run + 1} {key:<12} {rate:10,.0f} docs/s "
                                  f"({passes} passes)")
        if problems := server.problems():
            raise BenchError("syncd logged errors:\n" + "\n".join(problems[-10:]))
    finally:
        ctx.launched.stop(server)
    plans = benchkit.run(explain_filtered(ctx.dsn, ids, opts.page))

    def ratio(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(samples[a], samples[b], strict=True)]

    lines = [
        f"### Filtered pull: median of {opts.runs} runs, {opts.pull_seconds:g} s of whole passes "
        f"per sample, page {opts.page}, 1 client; syncd serve 1 worker",
        "",
        "| cell | docs/s (median) | range |",
        "|---|---:|---:|",
    ]
    for cell in PULL_CELLS:
        s = samples[cell.key]
        lines.append(f"| {cell.label} | {median(s):,.0f} | {min(s):,.0f} - {max(s):,.0f} |")
    checks = [
        ("syncd filtered 1M / syncd unfiltered 1M", "http-f-1m", "http-u-1m", "≥ 0.50"),
        ("syncd filtered 1M / syncd filtered 100k", "http-f-1m", "http-f-100k", "≥ 0.80"),
        ("limit filtered 1M / limit filtered 100k", "raw-f-1m", "raw-f-100k", ""),
        ("syncd filtered 1M / limit filtered 1M", "http-f-1m", "raw-f-1m", ""),
        ("syncd unfiltered 1M / limit unfiltered 1M", "http-u-1m", "raw-u-1m", ""),
        ("limit filtered 1M / limit unfiltered 1M", "raw-f-1m", "raw-u-1m", ""),
    ]
    lines += ["", "| ratio (within each run) | median | range | target | met |",
              "|---|---:|---:|---|---|"]
    for label, a, b, target in checks:
        r = ratio(a, b)
        met = ""
        if target:
            met = "yes" if median(r) >= float(target.split()[-1]) else "**no**"
        lines.append(f"| {label} | {median(r):.2f} | {spread(r)} | {target} | {met} |")
    lines += ["", "EXPLAIN (ANALYZE, BUFFERS) of the filtered statement:", "", "```", plans,
              "```"]
    return "\n".join(lines)


# --- part 2: pushes -------------------------------------------------------------------------------


def doc(doc_id: str, version: int, list_id: str, region: str) -> dict[str, Any]:
    body = documents.document(doc_id, version)
    body["listId"] = list_id
    body["region"] = region
    return body


def other_list(list_id: str, rng: random.Random, lists: int = LISTS) -> str:
    return f"l{(int(list_id[1:]) + 1 + rng.randrange(lists - 1)) % lists}"


@dataclass(frozen=True, slots=True)
class PushKind:
    key: str
    label: str
    batch: int
    update: bool
    move_share: float  # of updated documents whose listId changes
    raw: bool = False  # syncd's PUSH_SQL over asyncpg (the limit), not HTTP


PUSH_KINDS = (
    PushKind("ins-1", "new documents, batch 1", 1, False, 0.0),
    PushKind("ins-100", "new documents, batch 100", 100, False, 0.0),
    PushKind("raw-ins-100", "limit (asyncpg, PUSH_SQL): new documents, batch 100", 100, False,
             0.0, True),
    PushKind("upd-100-10", "updates, batch 100, 10 % change listId", 100, True, 0.1),
    PushKind("upd-100-100", "updates, batch 100, every one changes listId", 100, True, 1.0),
)


@dataclass(slots=True)
class PushSample:
    rate: float
    moves: int
    server_cpu: float
    acked: int


async def reset(dsn: str, collection_id: uuid.UUID) -> None:
    conn = await benchkit.connect(dsn, "partialbench-reset", statement_timeout="0")
    try:
        await conn.execute("DELETE FROM syncd_documents WHERE collection_id = $1", collection_id)
        await conn.execute("DELETE FROM syncd_moves WHERE collection_id = $1", collection_id)
        await conn.execute("VACUUM syncd_documents")
        await conn.execute("VACUUM syncd_moves")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def counts(dsn: str, collection_id: uuid.UUID) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        docs = await conn.fetchval(
            "SELECT count(*) FROM syncd_documents WHERE collection_id = $1", collection_id)
        moves = await conn.fetchval(
            "SELECT count(*) FROM syncd_moves WHERE collection_id = $1", collection_id)
        return docs, moves
    finally:
        await conn.close()


async def push_rows(conn: bench.HttpConnection, collection: str, rows: list[Any]) -> None:
    status, answer = await conn.request("POST", f"/api/v1/sync/{collection}", orjson.dumps(rows))
    if status != 200 or answer.strip() != b"[]":
        raise BenchError(f"push to {collection} answered {status} {answer[:300]!r}")


async def raw_push(conn: Any, collection_id: uuid.UUID, rows: list[Any]) -> None:
    ids = [row["newDocumentState"]["id"] for row in rows]
    new = [orjson.dumps(row["newDocumentState"]).decode() for row in rows]
    written = await conn.fetch(PUSH_SQL, collection_id, "", ids, [None] * len(ids), new)
    if len(written) != len(ids):
        raise BenchError(f"limit push wrote {len(written)} of {len(ids)} rows")


async def push_cell(server: bench.Server, collection: str, kind: PushKind, opts: Options,
                    prefix: str, dsn: str, collection_id: uuid.UUID
                    ) -> tuple[float, int, float]:
    conns: list[Any] = [bench.HttpConnection(server.port) for _ in range(opts.clients)]
    pools: list[list[dict[str, Any]]] = []
    rng = random.Random(7)
    try:
        if kind.raw:
            conns = [await benchkit.connect(dsn, "partialbench-limit") for _ in conns]
        for conn in conns:
            if not kind.raw:
                await conn.open()
        if kind.update:  # each client's documents, created before the cell
            for c, conn in enumerate(conns):
                pool = [doc(f"{prefix}c{c}-{i:09d}", 0, f"l{i % LISTS}", f"r{i % 5}")
                        for i in range(UPDATE_POOL)]
                for start in range(0, UPDATE_POOL, 500):
                    await push_rows(conn, collection,
                                    [{"newDocumentState": d} for d in pool[start:start + 500]])
                pools.append(pool)
        window = benchkit.Window()
        deadline = time.monotonic() + opts.warmup + opts.seconds + 120
        counted = [0]
        cpu: list[float] = []

        async def one(c: int, conn: bench.HttpConnection) -> None:
            n, version, position = 0, 0, 0
            while not window.stopped and time.monotonic() < deadline and n < 10_000_000:
                if kind.update:
                    pool = pools[c]
                    rows = []
                    version += 1
                    for _ in range(kind.batch):
                        old = pool[position]
                        list_id = old["listId"]
                        if rng.random() < kind.move_share:
                            list_id = other_list(list_id, rng)
                        new = doc(old["id"], version, list_id, old["region"])
                        rows.append({"newDocumentState": new, "assumedMasterState": old})
                        pool[position] = new
                        position = (position + 1) % len(pool)
                else:
                    rows = [{"newDocumentState": doc(f"{prefix}c{c}-{n + i:09d}", 0,
                                                     f"l{(n + i) % LISTS}", f"r{(n + i) % 5}")}
                            for i in range(kind.batch)]
                    n += kind.batch
                if kind.raw:
                    await raw_push(conn, collection_id, rows)
                else:
                    await push_rows(conn, collection, rows)
                if window.measuring:
                    counted[0] += kind.batch

        async def timed() -> None:
            await asyncio.sleep(opts.warmup)
            cpu.append(await asyncio.to_thread(server.cpu_seconds))
            await asyncio.sleep(opts.seconds)
            cpu.append(await asyncio.to_thread(server.cpu_seconds))

        await asyncio.gather(window.run(opts.warmup, opts.seconds), timed(),
                             *(one(c, conn) for c, conn in enumerate(conns)))
        return counted[0] / window.elapsed, 0, (cpu[1] - cpu[0]) / window.elapsed
    finally:
        for conn in conns:
            await conn.close()


def push_part(ctx: Context) -> str:
    opts = ctx.options
    samples: dict[tuple[str, str], list[PushSample]] = {}
    server = bench.start_syncd(ctx.url, 1, ctx.log_dir)
    ctx.launched.servers.append(server)
    try:
        for run in range(opts.runs):
            for key in benchkit.rotated(tuple(k.key for k in PUSH_KINDS), run):
                kind = next(k for k in PUSH_KINDS if k.key == key)
                for name in benchkit.rotated((PUSH_FILTERED, PUSH_PLAIN), run):
                    cid = ctx.ids[name]
                    benchkit.run(reset(ctx.dsn, cid))
                    prefix = f"r{run}-{secrets.token_hex(2)}-"
                    rate, _, cpu = benchkit.run(push_cell(server, name, kind, opts, prefix,
                                                               ctx.dsn, cid))
                    docs, moves = benchkit.run(counts(ctx.dsn, cid))
                    sample = PushSample(rate, moves, cpu, docs)
                    samples.setdefault((kind.key, name), []).append(sample)
                    benchkit.progress(f"  run {run + 1} {kind.key:<12} {name:<17} "
                                      f"{rate:9,.0f} docs/s  server {cpu:4.0%}  "
                                      f"stored {docs:,}  move records {moves:,}")
        if problems := server.problems():
            raise BenchError("syncd logged errors:\n" + "\n".join(problems[-10:]))
    finally:
        ctx.launched.stop(server)
    lines = [
        f"### Push into a collection with two declared filter fields vs none: median of "
        f"{opts.runs} runs, {opts.clients} clients, {opts.seconds:g} s per cell after "
        f"{opts.warmup:g} s warm-up; syncd serve 1 worker",
        "",
        "| pushes | declared fields: docs/s | none: docs/s | declared / none (range) | target "
        "| met | move records written (per run) | server CPU declared / none |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for kind in PUSH_KINDS:
        cpu_f = median([s.server_cpu for s in samples[(kind.key, PUSH_FILTERED)]])
        cpu_n = median([s.server_cpu for s in samples[(kind.key, PUSH_PLAIN)]])
        f, n = samples[(kind.key, PUSH_FILTERED)], samples[(kind.key, PUSH_PLAIN)]
        r = [a.rate / b.rate for a, b in zip(f, n, strict=True)]
        judged = not kind.update and not kind.raw
        target = "≥ 0.85" if judged else ""
        met = ("yes" if median(r) >= 0.85 else "**no**") if judged else ""
        lines.append(
            f"| {kind.label} | {median([s.rate for s in f]):,.0f} | "
            f"{median([s.rate for s in n]):,.0f} | {median(r):.2f} ({spread(r)}) | {target} | "
            f"{met} | {median([s.moves for s in f]):,.0f} / {median([s.moves for s in n]):,.0f} "
            f"| {cpu_f:.0%} / {cpu_n:.0%} |")
    return "\n".join(lines)


# --- part 3: live ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveJob:
    port: int
    subscribers: int
    lists: int
    open_timeout: float
    delivery_timeout: float
    within: float


def list_of(index: int, lists: int) -> str:
    return f"l{index % lists}"


def live_main(job: LiveJob, conn: Connection) -> None:
    try:
        result = benchkit.run(_live(job, conn))
        conn.send(("result", result))
    except BaseException as error:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


async def _live(job: LiveJob, pipe: Connection) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    records: list[tuple[int, float, str, bool, str | None, str]] = []
    by_doc: dict[str, list[int]] = {}  # doc id -> indexes into records
    pending: set[tuple[int, str, bool]] = set()  # (subscriber, doc id, deleted)
    current: list[Any] = [None]
    resyncs = [0]
    closed = [0]
    empty = [0]
    closing = False
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def on_pipe() -> None:
        try:
            while pipe.poll():
                inbox.put_nowait(pipe.recv())
        except (EOFError, OSError):
            inbox.put_nowait(("stop",))

    def settle() -> None:
        if current[0] is not None and not pending:
            pipe.send(("done", current[0]))
            current[0] = None

    def received(index: int, message: bytes) -> None:
        now = time.monotonic()
        if message == b'"RESYNC"':
            resyncs[0] += 1
            return
        docs = orjson.loads(message)["documents"]
        if not docs:
            empty[0] += 1
        for d in docs:
            rec = (index, now, d.get("id"), bool(d.get("_deleted")), d.get("listId"),
                   d.get("title", ""))
            by_doc.setdefault(rec[2], []).append(len(records))
            records.append(rec)
            pending.discard((index, rec[2], rec[3]))
        settle()

    sockets: list[Any] = [None] * job.subscribers
    gate = asyncio.Semaphore(20)

    async def open_one(index: int) -> None:
        flt = quote(orjson.dumps({"listId": list_of(index, job.lists)}).decode(), safe="")
        url = f"ws://127.0.0.1:{job.port}/api/v1/sync/{LIVE}/stream?filter={flt}"
        async with gate:
            ws = await connect(url, open_timeout=job.open_timeout, ping_interval=None,
                               compression=None, max_size=None, close_timeout=2, proxy=None)
            first = await asyncio.wait_for(ws.recv(decode=False), job.open_timeout)
            if first != b'"RESYNC"':
                raise BenchError(f"first message {first[:80]!r}")
            sockets[index] = ws

    async def read(index: int, ws: Any) -> None:
        try:
            async for message in ws:
                received(index, message if isinstance(message, bytes) else message.encode())
        except ConnectionClosed:
            pass
        if not closing:
            closed[0] += 1

    readers = []
    loop.add_reader(pipe.fileno(), on_pipe)
    try:
        await asyncio.gather(*(open_one(i) for i in range(job.subscribers)))
        for i, ws in enumerate(sockets):
            readers.append(asyncio.create_task(read(i, ws)))
        pipe.send(("ready", job.subscribers))
        deadline = time.monotonic() + job.within
        while time.monotonic() < deadline:
            message = await asyncio.wait_for(inbox.get(), job.within)
            if message[0] == "expect":  # ("expect", n, doc id, new list, old list or None)
                _, n, doc_id, new, old, _sent = message
                pending.clear()
                for s in range(job.subscribers):
                    if list_of(s, job.lists) == new:
                        pending.add((s, doc_id, False))
                    elif old is not None and list_of(s, job.lists) == old:
                        pending.add((s, doc_id, True))
                for r in by_doc.get(doc_id, []):  # frames that beat the expectation
                    rec = records[r]
                    if rec[1] >= message_time(message):
                        pending.discard((rec[0], rec[2], rec[3]))
                current[0] = n
                settle()
            elif message[0] == "give-up":
                pending.clear()
                current[0] = None
            elif message[0] == "finish":
                await asyncio.sleep(job.delivery_timeout)  # anything late or stray
                break
            else:
                break
        return {"records": records, "resyncs": resyncs[0], "closed": closed[0],
                "empty": empty[0]}
    finally:
        closing = True
        loop.remove_reader(pipe.fileno())
        os.set_blocking(pipe.fileno(), True)  # add_reader made it non-blocking; big sends follow
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(ws.close() for ws in sockets if ws is not None),
                                     return_exceptions=True)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


def message_time(message: tuple[Any, ...]) -> float:
    return float(message[5]) if len(message) > 5 else 0.0


@dataclass(slots=True)
class LiveRun:
    from_send: list[float] = field(default_factory=list)
    from_ack: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=dict)  # from send
    expected: int = 0
    delivered: int = 0
    missing: int = 0
    outside: int = 0
    duplicates: int = 0
    stray: int = 0
    resyncs: int = 0
    closed: int = 0
    empty: int = 0
    pushes: int = 0
    moves: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    cpu_per_push: float = 0.0  # ms of syncd CPU per push


async def live_pushes(port: int, opts: Options, pipe: Connection, rng: random.Random,
                      prefix: str) -> tuple[list[dict[str, Any]], float]:
    conn = bench.HttpConnection(port)
    await conn.open()
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def on_pipe() -> None:
        try:
            while pipe.poll():
                inbox.put_nowait(pipe.recv())
        except (EOFError, OSError):
            inbox.put_nowait(("error", "the subscriber process is gone"))

    loop.add_reader(pipe.fileno(), on_pipe)
    docs: dict[str, dict[str, Any]] = {}
    log: list[dict[str, Any]] = []
    cpu_started = time.process_time()
    try:
        for n in range(opts.pushes):
            move = bool(docs) and opts.live_filters > 1 and rng.random() < opts.move_share
            if move:
                doc_id = rng.choice(sorted(docs))
                old = docs[doc_id]
                old_list = old["listId"]
                new_list = other_list(old_list, rng, opts.live_filters)
            else:
                doc_id, old, old_list = f"{prefix}{n:06d}", None, None
                new_list = f"l{rng.randrange(opts.live_filters)}"
            new = doc(doc_id, n + 1, new_list, "r0")
            new["title"] = f"push {n}"
            row: dict[str, Any] = {"newDocumentState": new}
            if old is not None:
                row["assumedMasterState"] = old
            body = orjson.dumps([row])
            sent = time.monotonic()
            pipe.send(("expect", n, doc_id, new_list, old_list, sent))
            status, answer = await conn.request("POST", f"/api/v1/sync/{LIVE}", body)
            acked = time.monotonic()
            if status != 200 or answer.strip() != b"[]":
                raise BenchError(f"push answered {status} {answer[:300]!r}")
            docs[doc_id] = new
            log.append({"n": n, "id": doc_id, "new": new_list, "old": old_list, "sent": sent,
                        "acked": acked})
            try:
                async with asyncio.timeout(opts.delivery_timeout):
                    while True:
                        message = await inbox.get()
                        if message[0] == "error":
                            raise BenchError(f"subscriber process: {message[1]}")
                        if message[0] == "done" and message[1] == n:
                            break  # (a late "done" of a push given up on is skipped)
            except TimeoutError:
                pipe.send(("give-up",))
                benchkit.progress(f"  push {n}: not every expected frame within "
                                  f"{opts.delivery_timeout:g} s")
            await asyncio.sleep(rng.uniform(0.010, 0.050))
        pipe.send(("finish",))
    finally:
        loop.remove_reader(pipe.fileno())
        os.set_blocking(pipe.fileno(), True)  # add_reader made it non-blocking; big sends follow
        await conn.close()
    return log, time.process_time() - cpu_started


def analyse(log: list[dict[str, Any]], result: dict[str, Any], subscribers: int,
            lists: int) -> LiveRun:
    run = LiveRun(resyncs=result["resyncs"], closed=result["closed"], empty=result["empty"],
                  pushes=len(log), moves=sum(1 for p in log if p["old"] is not None))
    by_number = {p["n"]: p for p in log}
    moves_of: dict[str, list[dict[str, Any]]] = {}
    for p in log:
        if p["old"] is not None:
            moves_of.setdefault(p["id"], []).append(p)
    got: dict[tuple[int, int, bool], int] = {}  # (subscriber, push n, deleted) -> receipts
    for index, at, doc_id, deleted, list_id, title in result["records"]:
        mine = list_of(index, lists)
        if list_id != mine:
            run.outside += 1  # a document or placeholder outside this subscriber's filter
            continue
        if deleted:
            candidates = [p for p in moves_of.get(doc_id, []) if p["old"] == mine
                          and p["sent"] <= at]
            push = candidates[-1] if candidates else None
        else:
            number = int(title.split()[-1]) if title.startswith("push ") else -1
            push = by_number.get(number)
            if push is not None and (push["id"] != doc_id or push["new"] != mine):
                push = None
        if push is None:
            run.stray += 1
            continue
        key = (index, push["n"], deleted)
        got[key] = got.get(key, 0) + 1
        if got[key] > 1:
            run.duplicates += 1
            continue
        run.from_send.append((at - push["sent"]) * 1000)
        kind = "move-out" if deleted else "moved in" if push["old"] is not None else "new"
        run.by_kind.setdefault(kind, []).append((at - push["sent"]) * 1000)
        run.from_ack.append((at - push["acked"]) * 1000)
    for p in log:
        for s in range(subscribers):
            mine = list_of(s, lists)
            if mine == p["new"]:
                run.expected += 1
                run.missing += (s, p["n"], False) not in got
            elif p["old"] is not None and mine == p["old"]:
                run.expected += 1
                run.missing += (s, p["n"], True) not in got
    run.delivered = run.expected - run.missing
    return run


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


async def wake_cost(dsn: str, collection_id: uuid.UUID, lists: int, rounds: int = 5
                    ) -> tuple[float, float, float]:
    """What one wake-up of every filtered feed costs PostgreSQL and asyncpg, without syncd:
    syncd's filtered statement once per filter, from the partition's head (so each finds
    nothing, as most feeds do for a push of one document), one after another on one
    connection. (ms per wake-up of all feeds, ms per read, ms of the one routed read that
    serves them all since syncd reads once per partition: ``route_sql``); medians of
    ``rounds``."""
    conn = await benchkit.connect(dsn, "partialbench-wake")
    try:
        head = await conn.fetchrow(
            "SELECT xid::text::bigint, seq FROM syncd_documents WHERE collection_id = $1"
            " ORDER BY xid DESC, seq DESC LIMIT 1", collection_id)
        xid, seq = (head[0], head[1]) if head else (0, 0)
        sql = pull_sql(collection_id, ("listId",), "listId")
        took = []
        for _ in range(rounds):
            started = time.perf_counter()
            for k in range(lists):
                await conn.fetch(sql, "", xid, seq, 1000, 0, [orjson.dumps(f"l{k}").decode()])
            took.append((time.perf_counter() - started) * 1000)
        routed = route_sql(tuple(sorted(FILTERS_RULE["filters"])))
        once = []
        for _ in range(rounds * 10):
            started = time.perf_counter()
            await conn.fetch(routed, collection_id, "", xid, seq, 1000)
            once.append((time.perf_counter() - started) * 1000)
        return median(took), median(took) / lists, median(once)
    finally:
        await conn.close()


def live_part(ctx: Context) -> str:
    opts = ctx.options
    mp = multiprocessing.get_context("spawn")
    runs: list[LiveRun] = []
    for number in range(opts.runs):
        cid = ctx.ids[LIVE]
        benchkit.run(reset(ctx.dsn, cid))
        server = bench.start_syncd(ctx.url, opts.live_workers, ctx.log_dir)
        ctx.launched.servers.append(server)
        parent, child = mp.Pipe()
        job = LiveJob(port=server.port, subscribers=opts.subscribers, lists=opts.live_filters,
                      open_timeout=60.0, delivery_timeout=opts.delivery_timeout,
                      within=opts.pushes * (opts.delivery_timeout + 1) + 300)
        process = mp.Process(target=live_main, args=(job, child), daemon=True,
                             name="partial-bench-subscribers")
        process.start()
        child.close()
        try:
            if not parent.poll(180):
                raise BenchError("subscribers not ready within 180 s")
            message = parent.recv()
            if message[0] != "ready":
                raise BenchError(f"subscriber process: {message!r}")
            sub = psutil.Process(process.pid)
            sub_cpu = sum(sub.cpu_times()[:2])
            cpu0 = server.cpu_seconds()
            started = time.monotonic()
            log, _ = benchkit.run(live_pushes(server.port, opts, parent,
                                              random.Random(number), f"r{number}-"))
            elapsed = time.monotonic() - started
            cpu1 = server.cpu_seconds()
            sub_cpu = sum(sub.cpu_times()[:2]) - sub_cpu
            if not parent.poll(opts.delivery_timeout + 60):
                raise BenchError("no result from the subscriber process")
            message = parent.recv()
            if message[0] != "result":
                raise BenchError(f"subscriber process: {message!r}")
            run = analyse(log, message[1], opts.subscribers, opts.live_filters)
            run.server_cpu = (cpu1 - cpu0) / elapsed
            run.cpu_per_push = (cpu1 - cpu0) * 1000 / max(1, run.pushes)
            run.client_cpu = sub_cpu / elapsed
            runs.append(run)
            if problems := server.problems():
                raise BenchError("syncd logged errors:\n" + "\n".join(problems[-10:]))
            benchkit.progress(
                f"  run {number + 1}: {run.pushes} pushes ({run.moves} moves), p50/p99 from "
                f"send {percentile(run.from_send, .5):.1f}/{percentile(run.from_send, .99):.1f}"
                f" ms, delivered {run.delivered:,} of {run.expected:,}, outside filter "
                f"{run.outside}, duplicates {run.duplicates}, stray {run.stray}, RESYNCs "
                f"{run.resyncs}, server CPU {run.server_cpu:.0%}")
        finally:
            with contextlib.suppress(OSError):
                parent.send(("stop",))  # the subscriber process ends without waiting any longer
            process.join(30)
            if process.is_alive():
                process.terminate()
                process.join(5)
            parent.close()
            ctx.launched.stop(server)
    wake_all, wake_one, wake_routed = benchkit.run(
        wake_cost(ctx.dsn, ctx.ids[LIVE], opts.live_filters))
    failures = [f"{r.missing} missing" for r in runs if r.missing]
    failures += [f"{r.outside} outside the filter" for r in runs if r.outside]
    p99s = [percentile(r.from_send, .99) for r in runs]
    lines = [
        f"### Live: {opts.subscribers:,} websocket subscribers over {opts.live_filters} filters, "
        f"{opts.pushes} single-document pushes per run ({opts.move_share:.0%} moves), "
        f"median of {opts.runs} runs; syncd serve {opts.live_workers} worker(s)"
        + ("; plan_cache_mode = force_generic_plan" if opts.generic_plans else ""),
        "",
        "| p50 from send ms | p99 from send ms | max ms | p50 / p99 from ack ms | expected "
        "frames delivered | outside filter | duplicates / stray | RESYNCs after the first / "
        "closed | server CPU | subscriber process CPU |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        f"| {median([percentile(r.from_send, .5) for r in runs]):.1f} "
        f"| {median(p99s):.1f} ({min(p99s):.1f} - {max(p99s):.1f}) "
        f"| {max(max(r.from_send) for r in runs):.1f} "
        f"| {median([percentile(r.from_ack, .5) for r in runs]):.1f} / "
        f"{median([percentile(r.from_ack, .99) for r in runs]):.1f} "
        f"| {sum(r.delivered for r in runs):,} of {sum(r.expected for r in runs):,} "
        f"| {sum(r.outside for r in runs)} "
        f"| {sum(r.duplicates for r in runs)} / {sum(r.stray for r in runs)} "
        f"| {sum(r.resyncs for r in runs)} / {sum(r.closed for r in runs)} "
        f"| {median([r.server_cpu for r in runs]):.0%} "
        f"| {median([r.client_cpu for r in runs]):.0%} |",
        "",
        f"Pushes {sum(r.pushes for r in runs)} of which moves {sum(r.moves for r in runs)}; "
        f"empty frames {sum(r.empty for r in runs)}. syncd CPU per push "
        f"{median([r.cpu_per_push for r in runs]):.1f} ms. One wake-up of all {opts.live_filters} "
        f"filtered feeds, SQL only (syncd's filtered statement per filter from the head, one "
        f"connection, no HTTP): {wake_all:.1f} ms ({wake_one:.2f} ms per feed); the one "
        f"routed read (route_sql) that serves them all: {wake_routed:.2f} ms. Target p99 "
        f"from send ≤ 100 ms, every expected frame, nothing outside: "
        + ("met" if median(p99s) <= 100 and not failures
           else "**not met** " + ", ".join(failures)),
    ]
    kinds = []
    for kind in ("new", "moved in", "move-out"):
        values = [v for r in runs for v in r.by_kind.get(kind, [])]
        if values:
            kinds.append(f"{kind}: {len(values):,} frames, p50 {percentile(values, .5):.1f} / "
                         f"p99 {percentile(values, .99):.1f} ms")
    lines.append("From send by frame (all runs pooled): " + "; ".join(kinds) + ".")
    if failures:
        lines.append("DELIVERY CHECK FAILED: " + "; ".join(failures))
    return "\n".join(lines)


# --- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    parts: tuple[str, ...]
    runs: int
    page: int
    pull_seconds: float
    big_docs: int
    small_docs: int
    seconds: float
    warmup: float
    clients: int
    subscribers: int
    pushes: int
    move_share: float
    live_filters: int
    delivery_timeout: float
    live_workers: int
    generic_plans: bool


@dataclass(slots=True)
class Context:
    url: str
    dsn: str
    ids: dict[str, uuid.UUID]
    options: Options
    launched: bench.Launched
    log_dir: Path


def parse_args(argv: Sequence[str] | None) -> tuple[str | None, Options]:
    parser = benchkit.argument_parser(
        "Partial replication (issue #11): filtered pull, push cost of declared fields, live "
        "filtered streams.",
        database_help="loopback or Unix-socket PostgreSQL URL of a server where a scratch "
        "database may be created (default: an embedded server in a temp dir)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 run, 100k/10k docs, short cells, 100 subscribers")
    parser.add_argument("--parts", type=benchkit.csv_choices(PARTS), default=PARTS)
    parser.add_argument("--runs", type=int, default=None, help="default 5 (pull/push), quick 1")
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--pull-seconds", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=None, help="per push cell (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--subscribers", type=int, default=None, help="default 1000")
    parser.add_argument("--pushes", type=int, default=None, help="per live run (default 300)")
    parser.add_argument("--move-share", type=float, default=0.25)
    parser.add_argument("--live-filters", type=int, default=LISTS,
                        help="distinct filters {listId: l<k>} the subscribers are spread over")
    parser.add_argument("--delivery-timeout", type=float, default=5.0)
    parser.add_argument("--live-workers", type=int, default=1)
    parser.add_argument(
        "--generic-plans", action="store_true",
        help="experiment: ALTER DATABASE … SET plan_cache_mode = force_generic_plan on the "
        "scratch database before syncd starts (every statement of every connection then runs "
        "its generic plan, never re-planned)")
    args = parser.parse_args(argv)
    quick = args.quick
    options = Options(
        parts=args.parts,
        runs=args.runs or (1 if quick else 5),
        page=args.page,
        pull_seconds=0.5 if quick else args.pull_seconds,
        big_docs=100_000 if quick else 1_000_000,
        small_docs=10_000 if quick else 100_000,
        seconds=args.seconds or (1.0 if quick else 5.0),
        warmup=0.5 if quick else args.warmup,
        clients=args.clients,
        subscribers=args.subscribers or (100 if quick else 1000),
        pushes=args.pushes or (30 if quick else 300),
        move_share=args.move_share,
        live_filters=args.live_filters,
        delivery_timeout=args.delivery_timeout,
        live_workers=args.live_workers,
        generic_plans=args.generic_plans,
    )
    if not 1 <= options.runs <= 20 or not 1 <= options.clients <= 64:
        parser.error("--runs 1..20, --clients 1..64")
    if not 1 <= options.pushes <= 5000 or not 10 <= options.subscribers <= 5000:
        parser.error("--pushes 1..5000, --subscribers 10..5000")
    return args.database_url, options


def main(argv: Sequence[str] | None = None) -> int:
    database_url, options = parse_args(argv)
    global TARGET_DOCS
    if options.big_docs < 1_000_000:
        TARGET_DOCS = options.big_docs // 100
    benchkit.exit_on_signals()
    benchkit.raise_nofile_limit()
    launched = bench.Launched()
    log_dir = Path(tempfile.mkdtemp(prefix="partialbench-logs-"))
    keep_logs = True
    reports: list[str] = []
    try:
        with benchkit.scratch_database(database_url, "partialbench", secrets.token_hex(3)) as url:
            header = benchkit.run(bench.describe_server(url))
            benchkit.progress(header)
            from syncd.db import migrate

            migrate.upgrade(url)
            if options.generic_plans:
                benchkit.run(force_generic_plans(asyncpg_dsn(url)))
            register(url, PULL_BIG, True, log_dir)
            register(url, PULL_SMALL, True, log_dir)
            register(url, PUSH_FILTERED, True, log_dir)
            register(url, PUSH_PLAIN, False, log_dir)
            register(url, LIVE, True, log_dir)
            dsn = asyncpg_dsn(url)
            ctx = Context(url, dsn, benchkit.run(collection_ids(dsn)), options, launched,
                          log_dir)
            reports.append(header)
            if "pull" in options.parts:
                benchkit.progress(f"loading {options.big_docs:,} documents into {PULL_BIG} …")
                took = benchkit.run(load(dsn, ctx.ids[PULL_BIG], options.big_docs, BIG_LIST))
                reports.append(f"Loaded {options.big_docs:,} documents in {took:.0f} s "
                               "(INSERT … SELECT generate_series, 100,000 per statement)")
                benchkit.run(load(dsn, ctx.ids[PULL_SMALL], options.small_docs, SMALL_LIST))
                reports.append(pull_part(ctx))
                print(reports[-1], flush=True)
            if "push" in options.parts:
                reports.append(push_part(ctx))
                print(reports[-1], flush=True)
            if "live" in options.parts:
                reports.append(live_part(ctx))
                print(reports[-1], flush=True)
            launched.stop_all()
        keep_logs = False
    finally:
        launched.stop_all()
        if keep_logs:
            benchkit.progress(f"server logs kept in {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    print("\n\n".join(reports), flush=True)
    return 0


if __name__ == "__main__":
    benchkit.run_main(main)
