#!/usr/bin/env python3
"""Ordering-key mechanisms side by side: what each costs in writes, and whether pulls skip.

Measures, on one PostgreSQL, the three candidates for the change-ordering key of DESIGN.md §1:

* **A**  a plain sequence default (``nextval``) as the key, no horizon. Known to be wrong (a
  transaction that took key 41 and commits after 42 was read is skipped); the upper bound.
* **B**  ``pg_advisory_xact_lock(hashtext(collection))`` before writing, then the sequence key:
  key assignment serialized with the commit, per collection.
* **DC** syncd's own mechanism: ``xid8`` + sequence stamped by a ``BEFORE INSERT OR UPDATE``
  trigger (the function body is taken from syncd's migration, names swapped), pulls served only
  below ``pg_snapshot_xmin(pg_current_snapshot())`` (syncd's ``PULL_SQL``, table swapped).

For each mechanism, in scratch tables ``ordbench_<token>_*`` that the script creates for every
measurement and drops afterwards (it never touches ``syncd_*``):

1. batch-100 upserts of ~1 KB RxDB-shaped documents into one collection, 8 writer connections,
   with the compare-and-set shape of syncd's ``PUSH_SQL`` (unnest + ``INSERT … ON CONFLICT DO
   UPDATE … WHERE data = assumed``) — documents/s;
2. the same with one document per transaction — commits/s;
3. a torture run: 8 writers (half hold their transaction open 0-50 ms before committing) and 2
   readers paging with ``limit 7`` from their own checkpoints. When the writers stop, each reader
   catches up to the head; a document whose final version (``n``) the reader never saw is a
   skipped version: the reader's checkpoint had already passed its key when it became visible,
   and no pull will ever return it.

Every cell runs ``--seconds`` (after a short warm-up), ``--runs`` times, mechanisms in rotating
order; the medians are printed as a markdown table with each mechanism's ratio to A.

    .venv/bin/python loadtests/ordering_bench.py                     # embedded PostgreSQL
    .venv/bin/python loadtests/ordering_bench.py --seconds 3 --runs 1
    .venv/bin/python loadtests/ordering_bench.py --database-url postgresql://u:p@127.0.0.1/db

The embedded server lives in a temporary directory and is stopped (and the directory removed)
when the script ends, also on Ctrl-C or SIGTERM. Only loopback or Unix-socket databases are used.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import benchkit
import orjson

from syncd.db import store as syncd_store

MECHANISMS: tuple[str, ...] = ("A", "B", "DC")
DESCRIPTIONS = {
    "A": "A: plain sequence (`nextval` default), no horizon",
    "B": "B: `pg_advisory_xact_lock(hashtext(collection))` + sequence",
    "DC": "DC: `xid8` + sequence by trigger, pull below `pg_snapshot_xmin`",
}
TESTS: tuple[str, ...] = ("batch", "single", "torture")
COLLECTION = "bench_todos"
ORIGIN: tuple[int, int] = (0, 0)


# --- scratch schema, one mechanism at a time ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scratch:
    """The scratch objects of one measurement, named after the run's prefix."""

    mechanism: str
    prefix: str

    @property
    def collections(self) -> str:
        return f"{self.prefix}_collections"

    @property
    def table(self) -> str:
        return f"{self.prefix}_docs"

    @property
    def sequence(self) -> str:
        return f"{self.prefix}_seq"

    @property
    def function(self) -> str:
        return f"{self.prefix}_stamp"

    def create_sql(self) -> list[str]:
        if self.mechanism == "DC":
            key_columns = "xid xid8 NOT NULL,\n    seq bigint NOT NULL"
            key_index = "xid, seq"
        else:
            key_columns = f"key bigint NOT NULL DEFAULT nextval('{self.sequence}')"
            key_index = "key"
        # The shape of syncd_documents (migration 0001): FK to a collections table, collation "C"
        # ids, primary key (collection_id, partition, id), one index serving every pull.
        statements = [
            f"CREATE TABLE {self.collections} (id uuid PRIMARY KEY, name text NOT NULL UNIQUE)",
            f"CREATE SEQUENCE {self.sequence} AS bigint",
            f"""CREATE TABLE {self.table} (
    collection_id uuid NOT NULL REFERENCES {self.collections} (id) ON DELETE CASCADE,
    partition text COLLATE "C" NOT NULL DEFAULT '',
    id text COLLATE "C" NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    {key_columns},
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, partition, id)
)""",
            f"CREATE INDEX {self.prefix}_changes ON {self.table} "
            f"(collection_id, partition, {key_index})",
        ]
        if self.mechanism == "DC":
            statements += [
                benchkit.syncd_stamp_function(self.function, self.sequence),
                f"CREATE TRIGGER {self.prefix}_stamp BEFORE INSERT OR UPDATE ON {self.table} "
                f"FOR EACH ROW EXECUTE FUNCTION {self.function}()",
            ]
        return statements

    def drop_sql(self) -> list[str]:
        return [
            f"DROP TABLE IF EXISTS {self.table}, {self.collections} CASCADE",
            f"DROP SEQUENCE IF EXISTS {self.sequence}",
            f"DROP FUNCTION IF EXISTS {self.function}()",
        ]

    @property
    def lock_sql(self) -> str | None:
        return "SELECT pg_advisory_xact_lock(hashtext($1))" if self.mechanism == "B" else None

    @property
    def push_sql(self) -> str:
        if self.mechanism == "DC":
            return benchkit.rename_syncd_sql(syncd_store.PUSH_SQL, {"syncd_documents": self.table})
        # syncd's PUSH_SQL with what its trigger does spelled out: the sequence default is the new
        # key (EXCLUDED.key is the default evaluated for the proposed row), `deleted` follows
        # `_deleted`, updated_at moves.
        return f"""
WITH input AS (
    SELECT i.id, i.assumed, i.new
    FROM unnest($3::text[], $4::jsonb[], $5::jsonb[]) AS i(id, assumed, new)
)
INSERT INTO {self.table} AS d (collection_id, partition, id, data, deleted)
SELECT $1, $2, input.id, input.new, coalesce((input.new ->> '_deleted')::boolean, false)
FROM input ORDER BY input.id COLLATE "C"
ON CONFLICT (collection_id, partition, id) DO UPDATE
    SET data = EXCLUDED.data, deleted = EXCLUDED.deleted, key = EXCLUDED.key, updated_at = now()
    WHERE d.data = (SELECT input.assumed FROM input WHERE input.id = EXCLUDED.id)
      AND d.data <> EXCLUDED.data
RETURNING d.id
"""

    @property
    def pull_sql(self) -> str:
        if self.mechanism == "DC":
            return benchkit.rename_syncd_sql(syncd_store.PULL_SQL, {"syncd_documents": self.table})
        return f"""
SELECT data, key
FROM {self.table}
WHERE collection_id = $1 AND partition = $2 AND key > $3
ORDER BY key
LIMIT $4
"""

    @property
    def head_sql(self) -> str:
        if self.mechanism == "DC":
            return (
                f"SELECT xid::text::bigint, seq FROM {self.table} "
                "WHERE collection_id = $1 AND partition = $2 ORDER BY xid DESC, seq DESC LIMIT 1"
            )
        return (
            f"SELECT key, 0 FROM {self.table} "
            "WHERE collection_id = $1 AND partition = $2 ORDER BY key DESC LIMIT 1"
        )

    @property
    def final_sql(self) -> str:
        return f"SELECT id, (data ->> 'n')::int FROM {self.table} WHERE collection_id = $1"


@dataclass(frozen=True, slots=True)
class Bench:
    """Everything a measurement needs: where the database is and how to talk to the scratch."""

    dsn: str
    scratch: Scratch
    collection_id: Any  # uuid.UUID, as asyncpg returns it

    async def connect(self) -> Any:
        return await _connect(self.dsn)

    async def push(
        self, conn: Any, ids: list[str], assumed: list[str | None], new: list[str],
        hold_s: float = 0.0,
    ) -> int:
        """One push transaction; returns how many rows it wrote. ``hold_s``: wait before commit."""
        lock_sql = self.scratch.lock_sql
        async with conn.transaction():
            if lock_sql is not None:
                await conn.execute(lock_sql, COLLECTION)
            written = await conn.fetch(
                self.scratch.push_sql, self.collection_id, "", ids, assumed, new
            )
            if hold_s > 0:
                await asyncio.sleep(hold_s)
        return len(written)

    async def pull(
        self, conn: Any, after: tuple[int, int], limit: int
    ) -> tuple[list[str], tuple[int, int]]:
        """One page from ``after``: the documents' JSON and the checkpoint of the last one."""
        if self.scratch.mechanism == "DC":
            rows = await conn.fetch(
                self.scratch.pull_sql, self.collection_id, "", after[0], after[1], limit
            )
            if not rows:
                return [], after
            return [row[0] for row in rows], (int(rows[-1][1]), int(rows[-1][2]))
        rows = await conn.fetch(self.scratch.pull_sql, self.collection_id, "", after[0], limit)
        if not rows:
            return [], after
        return [row[0] for row in rows], (int(rows[-1][1]), 0)

    async def head(self, conn: Any) -> tuple[int, int]:
        row = await conn.fetchrow(self.scratch.head_sql, self.collection_id, "")
        return ORIGIN if row is None else (int(row[0]), int(row[1]))


async def _connect(dsn: str) -> Any:
    return await benchkit.connect(dsn, "ordering_bench", statement_timeout="120s")


# --- documents ------------------------------------------------------------------------------------

WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
)


class Documents:
    """RxDB-shaped documents of about ``size`` bytes for one writer: fields plus ``_deleted``.

    ``n`` is the version counter: every write of a document increments it, so a reader can tell
    exactly which version it saw.
    """

    def __init__(self, writer: int, size: int, rng: random.Random) -> None:
        self.writer = writer
        self.rng = rng
        self.tags = [rng.choice(WORDS) for _ in range(3)]
        base = len(self._encode("w0-000000", 1, ""))
        words: list[str] = []
        while len(" ".join(words)) < max(0, size - base):
            words.append(rng.choice(WORDS))
        self.body = " ".join(words)[: max(0, size - base)]
        self.state: dict[str, str] = {}  # id → the JSON this writer last wrote (assumed master)
        self.version: dict[str, int] = {}

    def _encode(self, doc_id: str, n: int, body: str) -> bytes:
        return orjson.dumps(
            {
                "id": doc_id,
                "title": f"Todo {doc_id}",
                "body": body,
                "tags": self.tags,
                "priority": n % 5,
                "done": n % 3 == 0,
                "n": n,
                "updatedAt": int(time.time() * 1000),
                "_deleted": n % 10 == 0,  # now and then a tombstone, so `deleted` has to follow
            }
        )

    def batch(self, ids: list[str]) -> tuple[list[str | None], list[str]]:
        """(assumed master states, new states) for the next version of each id."""
        assumed = [self.state.get(doc_id) for doc_id in ids]
        new = [
            self._encode(doc_id, self.version.get(doc_id, 0) + 1, self.body).decode()
            for doc_id in ids
        ]
        return assumed, new

    def written(self, ids: list[str], new: list[str]) -> None:
        for doc_id, doc in zip(ids, new, strict=True):
            self.state[doc_id] = doc
            self.version[doc_id] = self.version.get(doc_id, 0) + 1


def _doc_id(writer: int, number: int) -> str:
    return f"w{writer}-{number:06d}"


# --- throughput -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    docs: int = 0
    commits: int = 0


@dataclass(frozen=True, slots=True)
class Throughput:
    docs_per_s: float
    commits_per_s: float


async def _throughput_writer(
    bench: Bench, conn: Any, writer: int, batch: int, pool: int, size: int,
    window: benchkit.Window, tally: Tally,
) -> None:
    """Pushes ``batch`` documents per transaction, cycling through its own ``pool`` of ids: the
    first pass inserts, later passes update with compare-and-set against what it wrote before."""
    docs = Documents(writer, size, random.Random(writer))
    ids = [_doc_id(writer, i) for i in range(pool)]
    position = 0
    while not window.stopped:
        chunk = ids[position : position + batch]
        position = (position + batch) % pool
        assumed, new = docs.batch(chunk)
        written = await bench.push(conn, chunk, assumed, new)
        if written != len(chunk):  # cannot happen with private ids: the measurement is void
            raise RuntimeError(f"writer {writer}: {len(chunk) - written} rows conflicted")
        docs.written(chunk, new)
        if window.measuring:
            tally.docs += written
            tally.commits += 1


async def measure_throughput(
    bench: Bench, *, writers: int, batch: int, pool: int, size: int, warmup: float,
    seconds: float,
) -> Throughput:
    connections = [await bench.connect() for _ in range(writers)]
    try:
        window = benchkit.Window()
        tally = Tally()
        async with asyncio.TaskGroup() as group:
            group.create_task(window.run(warmup, seconds))
            for writer, conn in enumerate(connections):
                group.create_task(
                    _throughput_writer(bench, conn, writer, batch, pool, size, window, tally)
                )
        return Throughput(tally.docs / window.elapsed, tally.commits / window.elapsed)
    finally:
        for conn in connections:
            await conn.close()


# --- torture: late commits against small-page readers ---------------------------------------------


@dataclass(frozen=True, slots=True)
class TortureConfig:
    writers: int
    holders: int  # how many of the writers hold their transaction open before committing
    hold_ms: float
    think_ms: float  # pause between the other writers' transactions (outside the transaction)
    batch: int
    new_fraction: float  # share of each batch that creates documents; the rest updates
    readers: int
    limit: int
    size: int
    catch_up_s: float = 60.0


@dataclass(slots=True)
class ReaderLog:
    seen: set[tuple[str, int]] = field(default_factory=set)
    duplicates: int = 0
    pages: int = 0
    out_of_order: int = 0
    catch_up_s: float = 0.0  # from the writers' stop to the head


@dataclass(frozen=True, slots=True)
class TortureResult:
    skipped: list[int]  # per reader: documents whose final version it never saw
    duplicates: list[int]
    pages: list[int]
    catch_up_s: list[float]
    versions: int  # versions committed by all writers
    documents: int  # documents in the table at the end


async def _torture_writer(
    bench: Bench, conn: Any, writer: int, holds: bool, config: TortureConfig,
    window: benchkit.Window, committed: list[int],
) -> None:
    rng = random.Random(1000 + writer)
    docs = Documents(writer, config.size, rng)
    created = 0
    while not window.stopped:
        chosen: set[str] = set()
        for _ in range(config.batch):
            if created == 0 or rng.random() < config.new_fraction:
                chosen.add(_doc_id(writer, created))
                created += 1
            else:
                chosen.add(_doc_id(writer, rng.randrange(created)))
        ids = sorted(chosen)
        assumed, new = docs.batch(ids)
        hold_s = rng.uniform(0, config.hold_ms) / 1000 if holds else 0.0
        written = await bench.push(conn, ids, assumed, new, hold_s)
        if written != len(ids):
            raise RuntimeError(f"torture writer {writer}: {len(ids) - written} rows conflicted")
        docs.written(ids, new)
        committed[writer] += written
        if not holds and config.think_ms > 0:
            await asyncio.sleep(rng.uniform(0, config.think_ms) / 1000)


async def _torture_reader(
    bench: Bench, conn: Any, config: TortureConfig, writers_done: asyncio.Event
) -> ReaderLog:
    """Pages from its own checkpoint while the writers run, then catches up to the head."""
    log = ReaderLog()
    checkpoint = ORIGIN

    async def page() -> int:
        nonlocal checkpoint
        documents, after = await bench.pull(conn, checkpoint, config.limit)
        log.pages += 1
        if documents and after <= checkpoint:
            log.out_of_order += 1
        checkpoint = after
        for text in documents:
            doc = orjson.loads(text)
            version = (str(doc["id"]), int(doc["n"]))
            if version in log.seen:
                log.duplicates += 1
            log.seen.add(version)
        return len(documents)

    while not writers_done.is_set():
        if await page() < config.limit:
            await asyncio.sleep(0.002)  # at the head: poll again shortly, like a live feed
    head = await bench.head(conn)
    started = time.monotonic()
    deadline = started + config.catch_up_s
    while checkpoint < head:
        if await page() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"reader did not reach the head {head} from {checkpoint} within "
                    f"{config.catch_up_s:.0f}s (a long-open transaction in the cluster?)"
                )
            await asyncio.sleep(0.01)
    log.catch_up_s = time.monotonic() - started
    return log


async def measure_torture(
    bench: Bench, config: TortureConfig, *, warmup: float, seconds: float
) -> TortureResult:
    writer_conns = [await bench.connect() for _ in range(config.writers)]
    reader_conns = [await bench.connect() for _ in range(config.readers)]
    try:
        window = benchkit.Window()
        writers_done = asyncio.Event()
        committed = [0] * config.writers
        readers = [
            asyncio.create_task(_torture_reader(bench, conn, config, writers_done))
            for conn in reader_conns
        ]
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(window.run(warmup, seconds))
                for writer, conn in enumerate(writer_conns):
                    holds = writer % 2 == 1 and writer // 2 < config.holders
                    group.create_task(
                        _torture_writer(bench, conn, writer, holds, config, window, committed)
                    )
        finally:
            writers_done.set()
        logs = await asyncio.gather(*readers)
        final = await reader_conns[0].fetch(bench.scratch.final_sql, bench.collection_id)
        final_versions = [(str(row[0]), int(row[1])) for row in final]
        return TortureResult(
            skipped=[sum(1 for v in final_versions if v not in log.seen) for log in logs],
            duplicates=[log.duplicates + log.out_of_order for log in logs],
            pages=[log.pages for log in logs],
            catch_up_s=[log.catch_up_s for log in logs],
            versions=sum(committed),
            documents=len(final_versions),
        )
    finally:
        for conn in writer_conns + reader_conns:
            await conn.close()


# --- one cell: create the scratch, measure, drop it -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    seconds: float
    runs: int
    warmup: float
    writers: int
    batch: int
    docs_per_writer: int
    doc_bytes: int
    mechanisms: tuple[str, ...]
    tests: tuple[str, ...]
    torture: TortureConfig
    checkpoint_between_cells: bool


@dataclass(slots=True)
class Results:
    batch: dict[str, list[float]] = field(default_factory=dict)  # docs/s
    single: dict[str, list[float]] = field(default_factory=dict)  # commits/s
    torture: dict[str, list[TortureResult]] = field(default_factory=dict)


async def run_cell(
    dsn: str, prefix: str, mechanism: str, test: str, options: Options, results: Results
) -> str:
    scratch = Scratch(mechanism, prefix)
    async with benchkit.scratch_objects(
        lambda: _connect(dsn), scratch.create_sql(), scratch.drop_sql(),
        checkpoint=options.checkpoint_between_cells,
    ) as admin:
        collection_id = await admin.fetchval(
            f"INSERT INTO {scratch.collections} (id, name) VALUES (gen_random_uuid(), $1) "
            "RETURNING id",
            COLLECTION,
        )
        bench = Bench(dsn, scratch, collection_id)
        if test == "torture":
            outcome = await measure_torture(
                bench, options.torture, warmup=options.warmup, seconds=options.seconds
            )
            results.torture.setdefault(mechanism, []).append(outcome)
            return (
                f"skipped per reader {outcome.skipped} of {outcome.documents} documents "
                f"({outcome.versions} versions written, pages {outcome.pages}, catch-up "
                f"{', '.join(f'{s:.1f}' for s in outcome.catch_up_s)} s"
                + (f", DUPLICATES {outcome.duplicates}" if any(outcome.duplicates) else "")
                + ")"
            )
        single = test == "single"
        rates = await measure_throughput(
            bench,
            writers=options.writers,
            batch=1 if single else options.batch,
            pool=max(1, options.docs_per_writer // (1 if single else options.batch))
            * (1 if single else options.batch),
            size=options.doc_bytes,
            warmup=options.warmup,
            seconds=options.seconds,
        )
        if single:
            results.single.setdefault(mechanism, []).append(rates.commits_per_s)
            return f"{rates.commits_per_s:.0f} commits/s"
        results.batch.setdefault(mechanism, []).append(rates.docs_per_s)
        return f"{rates.docs_per_s:.0f} docs/s ({rates.commits_per_s:.0f} commits/s)"


async def describe_server(dsn: str) -> str:
    return await benchkit.describe_server(
        lambda: _connect(dsn),
        ("fsync", "synchronous_commit", "shared_buffers", "wal_level", "max_wal_size"),
    )


async def run_all(dsn: str, prefix: str, options: Options) -> Results:
    results = Results()
    for run in range(options.runs):
        for test in options.tests:
            for mechanism in benchkit.rotated(options.mechanisms, run):
                started = time.monotonic()
                summary = await run_cell(dsn, prefix, mechanism, test, options, results)
                benchkit.progress(
                    f"run {run + 1}/{options.runs} {test:<7} {mechanism:<2} {summary} "
                    f"[{time.monotonic() - started:.1f}s]"
                )
    return results


async def drop_everything(dsn: str, prefix: str) -> None:
    """Safety net after an interruption: drop this run's scratch objects, whatever was left."""
    statements = [sql for mechanism in MECHANISMS for sql in Scratch(mechanism, prefix).drop_sql()]
    await benchkit.execute_with(lambda: _connect(dsn), statements)


# --- the report -----------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def _ratio(value: float, base: float | None) -> str:
    return "—" if not base else f"{value / base:.2f}x"


def report(results: Results, options: Options) -> str:
    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    batch = {m: med(v) for m, v in results.batch.items()}
    single = {m: med(v) for m, v in results.single.items()}
    skipped = {
        m: med([statistics.mean(r.skipped) for r in runs]) for m, runs in results.torture.items()
    }
    documents = {m: med([r.documents for r in runs]) for m, runs in results.torture.items()}
    batch_base = batch.get("A")
    single_base = single.get("A")
    config = options.torture
    lines = [
        f"| mechanism | skipped versions per reader (of documents) "
        f"| batch-{options.batch} docs/s, {options.writers} writers, one collection | vs A "
        f"| batch-1 commits/s, {options.writers} writers, one collection | vs A |",
        "|---|---|---|---|---|---|",
    ]
    for mechanism in options.mechanisms:
        cells = [DESCRIPTIONS[mechanism]]
        if mechanism in skipped:
            cells.append(f"{skipped[mechanism]:,.0f} (of {documents[mechanism]:,.0f})")
        else:
            cells.append("—")
        for values, base in ((batch, batch_base), (single, single_base)):
            if mechanism in values:
                cells += [_rate(values[mechanism]), _ratio(values[mechanism], base)]
            else:
                cells += ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Medians of {options.runs} run(s), {options.seconds:g} s per cell after "
        f"{options.warmup:g} s warm-up; ~{options.doc_bytes} B documents. Torture: "
        f"{config.writers} writers in batches of {config.batch} ({config.holders} holding their "
        f"transaction open 0-{config.hold_ms:g} ms, the others pausing 0-{config.think_ms:g} ms "
        f"between commits), {config.readers} readers with limit {config.limit}; skipped = "
        "documents whose final version a reader never saw after catching up to the head.",
    ]
    duplicates = [
        (m, r.duplicates) for m, runs in results.torture.items() for r in runs if any(r.duplicates)
    ]
    if duplicates:
        lines.append(f"WARNING: versions served twice or out of order: {duplicates}")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = benchkit.argument_parser(
        "Throughput and correctness of the change-ordering key mechanisms A, B, DC."
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer connections")
    parser.add_argument("--batch", type=int, default=100, help="documents per batched push")
    parser.add_argument(
        "--docs-per-writer", type=int, default=2000,
        help="ids each throughput writer cycles through (first pass inserts, then updates)",
    )
    parser.add_argument("--doc-bytes", type=int, default=1024, help="approximate document size")
    parser.add_argument(
        "--mechanisms", type=benchkit.csv_choices(MECHANISMS), default=MECHANISMS,
        help="subset, e.g. A,DC",
    )
    parser.add_argument(
        "--tests", type=benchkit.csv_choices(TESTS), default=TESTS,
        help="batch (batch docs/s), single (batch-1 commits/s), torture (skipped versions)",
    )
    torture = parser.add_argument_group("torture (correctness) run")
    torture.add_argument("--readers", type=int, default=2)
    torture.add_argument("--limit", type=int, default=7, help="page size of the readers")
    torture.add_argument("--torture-batch", type=int, default=5, help="documents per commit")
    torture.add_argument("--hold-ms", type=float, default=50.0, help="holders wait 0..this")
    torture.add_argument(
        "--think-ms", type=float, default=5.0,
        help="non-holding writers pause 0..this between commits (readers must keep up with the "
        "head for a late commit to land behind a checkpoint)",
    )
    torture.add_argument(
        "--new-fraction", type=float, default=0.5,
        help="share of each torture batch that creates documents (the rest updates its own)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1 or args.writers < 1 or args.batch < 1:
        parser.error("--seconds, --runs, --writers and --batch must be positive")
    if args.readers < 1 or args.limit < 1 or args.torture_batch < 1:
        parser.error("--readers, --limit and --torture-batch must be positive")
    options = Options(
        seconds=args.seconds,
        runs=args.runs,
        warmup=max(0.0, args.warmup),
        writers=args.writers,
        batch=args.batch,
        docs_per_writer=max(args.docs_per_writer, args.batch),
        doc_bytes=args.doc_bytes,
        mechanisms=args.mechanisms,
        tests=args.tests,
        torture=TortureConfig(
            writers=args.writers,
            holders=args.writers // 2,
            hold_ms=args.hold_ms,
            think_ms=args.think_ms,
            batch=args.torture_batch,
            new_fraction=args.new_fraction,
            readers=args.readers,
            limit=args.limit,
            size=args.doc_bytes,
        ),
        checkpoint_between_cells=args.database_url is None,
    )
    return args, options


def main(argv: Sequence[str] | None = None) -> int:
    args, options = parse_args(argv)
    benchkit.exit_on_signals()
    with benchkit.scratch_session(
        args.database_url, "ordbench", asyncio.run, describe_server, drop_everything
    ) as session:
        results = asyncio.run(run_all(session.dsn, session.prefix, options))
    print(report(results, options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
