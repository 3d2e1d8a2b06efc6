#!/usr/bin/env python3
"""Does the wake-up path cap write throughput? ``NOTIFY`` in the write transaction vs syncd's way.

DESIGN.md §1 ("Wake-ups must not cap writes"): a ``NOTIFY`` issued inside a write transaction makes
every such commit queue on one cluster-wide lock (the notification queue's, held from pre-commit
until the commit is flushed), so concurrent commits stop sharing WAL flushes. This script measures,
on one PostgreSQL, 8 writer connections doing single-row upsert commits under three wake-up
strategies:

* **none**    (a) no notification at all: the upper bound.
* **tx**      (b) ``pg_notify`` inside every write transaction (an ``AFTER … FOR EACH STATEMENT``
  trigger on the scratch table, so it costs no extra round trip), with one ``LISTEN`` connection
  draining the channel.
* **batched** (c) syncd's own approach: no ``NOTIFY`` in the write transaction; after each commit
  the writer tells syncd's ``syncd.db.signals.Signals`` (the real class, interval 10 ms), which
  sends one batched ``pg_notify`` per interval from its own connection (and listens on it).
  The same extra ``LISTEN`` connection as in (b) drains the channel.

Every commit is what syncd's push does for one document: ``BEGIN``, syncd's ``PUSH_SQL``
(compare-and-set upsert, table name swapped) into a scratch copy of ``syncd_documents`` stamped by
syncd's own trigger function (``xid8`` + sequence), ``COMMIT``. Each writer cycles through its own
ids, so nothing conflicts. Two modes per strategy:

* **max**:   every writer commits as fast as it can for ``--seconds``: commits/s.
* **paced**: the writers together aim at ``--rate`` commits/s (1,000 by default), each on a fixed
  schedule; reported: the achieved rate, commit latency (``BEGIN`` sent → ``COMMIT`` acknowledged)
  p50/p99, and p99 measured from the scheduled start (includes the time a writer was behind).

Scratch objects ``wakebench_<token>_*`` are created for every measurement and dropped afterwards;
syncd's own ``syncd_*`` tables are never touched (notifications go to syncd's channel name,
``syncd_changes``, with a node name no syncd uses, so a syncd listening on that database ignores
them). Every cell runs ``--seconds`` after ``--warmup``, ``--runs`` times, strategies in rotating
order; medians are printed as a markdown table with ratios to (a).

Full-size run (the defaults: 8 writers, 10 s cells after 1 s warm-up, 1,000 commits/s paced,
5 runs: 30 cells, about 7 minutes) on the embedded PostgreSQL, or on a loopback server of your
own::

    .venv/bin/python loadtests/wakeup_bench.py
    .venv/bin/python loadtests/wakeup_bench.py --database-url postgresql://u:p@127.0.0.1:5432/db

Smoke test::

    .venv/bin/python loadtests/wakeup_bench.py --seconds 2 --warmup 0.5 --runs 1

The embedded server lives in a temporary directory and is stopped (by PID) and removed when the
script ends, also on Ctrl-C or SIGTERM. Only loopback or Unix-socket databases are used.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import benchkit
import orjson

from syncd.db import signals as syncd_signals
from syncd.db import store as syncd_store

STRATEGIES: tuple[str, ...] = ("none", "tx", "batched")
DESCRIPTIONS = {
    "none": "(a) no notification",
    "tx": "(b) `pg_notify` in every write transaction",
    "batched": "(c) syncd: batched `pg_notify` every 10 ms, separate connection",
}
MODES: tuple[str, ...] = ("max", "paced")
CHANNEL = syncd_signals.CHANNEL
NODE = "wakebench"  # the node name in payloads: no syncd node is called that


# --- scratch schema -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scratch:
    """The scratch objects of one measurement: syncd's document table, trigger and push SQL."""

    prefix: str
    collection_id: uuid.UUID

    @property
    def table(self) -> str:
        return f"{self.prefix}_docs"

    def create_sql(self, strategy: str) -> list[str]:
        p = self.prefix
        statements = [
            f"CREATE TABLE {p}_collections (id uuid PRIMARY KEY, name text NOT NULL UNIQUE)",
            f"CREATE SEQUENCE {p}_seq AS bigint",
            f"""CREATE TABLE {self.table} (
    collection_id uuid NOT NULL REFERENCES {p}_collections (id) ON DELETE CASCADE,
    partition text COLLATE "C" NOT NULL DEFAULT '',
    id text COLLATE "C" NOT NULL,
    data jsonb NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    xid xid8 NOT NULL,
    seq bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, partition, id)
)""",
            f"CREATE INDEX {p}_changes ON {self.table} (collection_id, partition, xid, seq)",
            benchkit.syncd_stamp_function(f"{p}_stamp", f"{p}_seq"),
            f"CREATE TRIGGER {p}_stamp BEFORE INSERT OR UPDATE ON {self.table} "
            f"FOR EACH ROW EXECUTE FUNCTION {p}_stamp()",
            f"INSERT INTO {p}_collections (id, name) VALUES ('{self.collection_id}', 'bench')",
        ]
        if strategy == "tx":
            payload = f"{NODE}-tx:{self.collection_id.hex}"
            statements += [
                f"""CREATE FUNCTION {p}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '{payload}');
    RETURN NULL;
END
$$""",
                f"CREATE TRIGGER {p}_notify AFTER INSERT OR UPDATE ON {self.table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {p}_notify()",
            ]
        return statements

    def drop_sql(self) -> list[str]:
        p = self.prefix
        return [
            f"DROP TABLE IF EXISTS {self.table}, {p}_collections CASCADE",
            f"DROP SEQUENCE IF EXISTS {p}_seq",
            f"DROP FUNCTION IF EXISTS {p}_stamp()",
            f"DROP FUNCTION IF EXISTS {p}_notify()",
        ]

    @property
    def push_sql(self) -> str:
        return benchkit.rename_syncd_sql(syncd_store.PUSH_SQL, {"syncd_documents": self.table})


async def _connect(dsn: str, name: str = "wakeup_bench") -> Any:
    return await benchkit.connect(dsn, name, statement_timeout="60s")


# --- one measurement ------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    commits: int = 0
    latencies: list[float] = field(default_factory=list)  # s, BEGIN → COMMIT acknowledged
    lags: list[float] = field(default_factory=list)  # s, scheduled start → COMMIT acknowledged
    notifications: int = 0  # received by the draining LISTEN connection while measuring


@dataclass(frozen=True, slots=True)
class Outcome:
    commits_per_s: float
    p50_ms: float
    p99_ms: float
    p99_schedule_ms: float
    notifications_per_s: float
    client_cpu: float  # this process's CPU time / wall time while measuring (1.0 = one core)


def _document(doc_id: str, n: int) -> str:
    return orjson.dumps(
        {"id": doc_id, "title": f"Todo {doc_id}", "done": n % 2 == 0, "n": n,
         "updatedAt": int(time.time() * 1000), "_deleted": False}
    ).decode()


async def _writer(
    conn: Any, scratch: Scratch, writer: int, writers: int, pool: int, rate: float | None,
    window: benchkit.Window, tally: Tally, committed: Callable[[], None],
) -> None:
    push_sql = scratch.push_sql
    ids = [f"w{writer}-{i:05d}" for i in range(pool)]
    state: dict[str, str] = {}
    interval = writers / rate if rate else 0.0
    number = 0
    while not window.stopped:
        due = window.started + (number + writer / writers) * interval
        if rate:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if window.stopped:
                return
        doc_id = ids[number % pool]
        new = _document(doc_id, number)
        began = time.perf_counter()
        async with conn.transaction():
            written = await conn.fetch(
                push_sql, scratch.collection_id, "", [doc_id], [state.get(doc_id)], [new]
            )
        done = time.perf_counter()
        if len(written) != 1:  # private ids: cannot happen, the measurement would be void
            raise RuntimeError(f"writer {writer}: the upsert of {doc_id} conflicted")
        committed()
        state[doc_id] = new
        number += 1
        if window.measuring:
            tally.commits += 1
            if rate:
                tally.latencies.append(done - began)
                tally.lags.append(done - due)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


async def measure(
    dsn: str, url: str, scratch: Scratch, strategy: str, rate: float | None, options: Options
) -> Outcome:
    writers = [await _connect(dsn, f"wakeup_bench_w{i}") for i in range(options.writers)]
    drain = None
    signals: syncd_signals.Signals | None = None
    window = benchkit.Window()
    tally = Tally()

    def received(*_args: object) -> None:
        if window.measuring:
            tally.notifications += 1

    def nothing() -> None:
        return None

    committed: Callable[[], None] = nothing
    try:
        if strategy in ("tx", "batched"):
            drain = await _connect(dsn, "wakeup_bench_listen")
            await drain.add_listener(CHANNEL, received)
        if strategy == "batched":
            signals = syncd_signals.Signals(
                url, NODE, lambda _ids: None, interval=options.notify_ms / 1000
            )
            signals.start()
            await asyncio.wait_for(signals.connected.wait(), 30)
            batcher, collection_id = signals, scratch.collection_id

            def tell_signals() -> None:
                batcher.committed(collection_id)

            committed = tell_signals
        cpu_before = 0.0

        async def clock() -> None:
            nonlocal cpu_before
            await asyncio.sleep(options.warmup)
            cpu_before = time.process_time()

        async with asyncio.TaskGroup() as group:
            group.create_task(window.run(options.warmup, options.seconds))
            group.create_task(clock())
            for number, conn in enumerate(writers):
                group.create_task(
                    _writer(conn, scratch, number, options.writers, options.pool, rate, window,
                            tally, committed)
                )
        cpu = (time.process_time() - cpu_before) / window.elapsed
        if signals is not None:
            await asyncio.sleep(3 * options.notify_ms / 1000)  # let the last batch go out
        return Outcome(
            commits_per_s=tally.commits / window.elapsed,
            p50_ms=_percentile(tally.latencies, 0.50) * 1000,
            p99_ms=_percentile(tally.latencies, 0.99) * 1000,
            p99_schedule_ms=_percentile(tally.lags, 0.99) * 1000,
            notifications_per_s=tally.notifications / window.elapsed,
            client_cpu=cpu,
        )
    finally:
        if signals is not None:
            await signals.close()
        for conn in [*writers, *([drain] if drain is not None else [])]:
            await conn.close()


# --- cells, runs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    seconds: float
    warmup: float
    runs: int
    writers: int
    pool: int
    rate: float
    notify_ms: float
    strategies: tuple[str, ...]
    modes: tuple[str, ...]
    checkpoint_between_cells: bool


Results = dict[tuple[str, str], list[Outcome]]  # (strategy, mode) → one outcome per run


async def run_cell(
    dsn: str, url: str, prefix: str, strategy: str, mode: str, options: Options
) -> Outcome:
    scratch = Scratch(prefix, uuid.uuid4())
    async with benchkit.scratch_objects(
        lambda: _connect(dsn), scratch.create_sql(strategy), scratch.drop_sql(),
        checkpoint=options.checkpoint_between_cells,
    ):
        rate = options.rate if mode == "paced" else None
        return await measure(dsn, url, scratch, strategy, rate, options)


async def run_all(dsn: str, url: str, prefix: str, options: Options) -> Results:
    results: Results = {}
    for run in range(options.runs):
        for mode in options.modes:
            for strategy in benchkit.rotated(options.strategies, run):
                started = time.monotonic()
                outcome = await run_cell(dsn, url, prefix, strategy, mode, options)
                results.setdefault((strategy, mode), []).append(outcome)
                detail = (
                    f"{outcome.commits_per_s:.0f} commits/s"
                    + (
                        f", p50 {outcome.p50_ms:.1f} ms, p99 {outcome.p99_ms:.1f} ms, "
                        f"p99 from schedule {outcome.p99_schedule_ms:.1f} ms"
                        if mode == "paced" else ""
                    )
                    + f", {outcome.notifications_per_s:.0f} notifications/s received, "
                    f"client CPU {outcome.client_cpu:.0%}"
                )
                benchkit.progress(
                    f"run {run + 1}/{options.runs} {mode:<5} {strategy:<7} {detail} "
                    f"[{time.monotonic() - started:.1f}s]"
                )
    return results


async def drop_everything(dsn: str, prefix: str) -> None:
    """Safety net after an interruption: drop this run's scratch objects, whatever was left."""
    await benchkit.execute_with(lambda: _connect(dsn), Scratch(prefix, uuid.uuid4()).drop_sql())


async def describe_server(dsn: str) -> str:
    return await benchkit.describe_server(
        lambda: _connect(dsn),
        ("fsync", "synchronous_commit", "commit_delay", "shared_buffers", "wal_level"),
    )


# --- the report -----------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _rate(value: float) -> str:
    return f"{value / 1000:.2f}k" if value >= 1000 else f"{value:.0f}"


def report(results: Results, options: Options) -> str:
    lines: list[str] = []
    if "max" in options.modes:
        base = results.get(("none", "max"))
        base_rate = _median([o.commits_per_s for o in base]) if base else None
        lines += [
            f"**As fast as possible: {options.writers} writers, single-row upsert commits**",
            "",
            "| strategy | commits/s | vs (a) | notifications/s received | client CPU |",
            "|---|---|---|---|---|",
        ]
        for strategy in options.strategies:
            outcomes = results.get((strategy, "max"), [])
            if not outcomes:
                continue
            rate = _median([o.commits_per_s for o in outcomes])
            ratio = f"{rate / base_rate:.2f}x" if base_rate else "—"
            notes = _median([o.notifications_per_s for o in outcomes])
            cpu = _median([o.client_cpu for o in outcomes])
            lines.append(
                f"| {DESCRIPTIONS[strategy]} | {_rate(rate)} | {ratio} | "
                f"{notes:,.0f} | {cpu:.0%} |"
            )
        lines.append("")
    if "paced" in options.modes:
        base = results.get(("none", "paced"))
        base_rate = _median([o.commits_per_s for o in base]) if base else None
        lines += [
            f"**Paced: {options.writers} writers aiming at {options.rate:,.0f} commits/s "
            "together**",
            "",
            "| strategy | achieved commits/s | vs (a) | commit p50 ms | commit p99 ms "
            "| p99 from schedule ms |",
            "|---|---|---|---|---|---|",
        ]
        for strategy in options.strategies:
            outcomes = results.get((strategy, "paced"), [])
            if not outcomes:
                continue
            rate = _median([o.commits_per_s for o in outcomes])
            ratio = f"{rate / base_rate:.2f}x" if base_rate else "—"
            lines.append(
                f"| {DESCRIPTIONS[strategy]} | {_rate(rate)} | {ratio} "
                f"| {_median([o.p50_ms for o in outcomes]):.1f} "
                f"| {_median([o.p99_ms for o in outcomes]):.1f} "
                f"| {_median([o.p99_schedule_ms for o in outcomes]):.1f} |"
            )
        lines.append("")
    lines.append(
        f"Medians of {options.runs} run(s), {options.seconds:g} s per cell after "
        f"{options.warmup:g} s warm-up. A commit is BEGIN + syncd's PUSH_SQL for one ~150 B "
        f"document (syncd's xid8 trigger) + COMMIT; each writer cycles through {options.pool} ids "
        f"of its own. (b) notifies from an AFTER … FOR EACH STATEMENT trigger; (c) is "
        f"syncd.db.signals.Signals with a {options.notify_ms:g} ms interval. Latency = BEGIN sent "
        "→ COMMIT acknowledged; 'from schedule' also counts the time a writer was behind its "
        "schedule. Client CPU 100% = one core busy in this (single) Python process."
    )
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = benchkit.argument_parser(
        "Write throughput with per-transaction NOTIFY vs syncd's batched wake-ups."
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument("--runs", type=int, default=5, help="repetitions; medians are reported")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer connections")
    parser.add_argument("--pool", type=int, default=1000, help="ids each writer cycles through")
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="paced mode: commits/s of all writers together"
    )
    parser.add_argument(
        "--notify-ms", type=float, default=10.0, help="(c): the batched notification interval"
    )
    parser.add_argument(
        "--strategies", type=benchkit.csv_choices(STRATEGIES), default=STRATEGIES,
        help="subset, e.g. none,tx",
    )
    parser.add_argument(
        "--modes", type=benchkit.csv_choices(MODES), default=MODES, help="max, paced or both"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1 or args.writers < 1 or args.pool < 1:
        parser.error("--seconds, --runs, --writers and --pool must be positive")
    if args.rate <= 0 or args.notify_ms <= 0:
        parser.error("--rate and --notify-ms must be positive")
    if args.seconds > 600 or args.runs > 50:
        parser.error("keep it bounded: --seconds ≤ 600 and --runs ≤ 50")
    options = Options(
        seconds=args.seconds,
        warmup=max(0.0, args.warmup),
        runs=args.runs,
        writers=args.writers,
        pool=args.pool,
        rate=args.rate,
        notify_ms=args.notify_ms,
        strategies=args.strategies,
        modes=args.modes,
        checkpoint_between_cells=args.database_url is None,
    )
    return args, options


def main(argv: Sequence[str] | None = None) -> int:
    args, options = parse_args(argv)
    benchkit.exit_on_signals()
    benchkit.raise_nofile_limit()
    with benchkit.scratch_session(
        args.database_url, "wakebench", benchkit.run, describe_server, drop_everything
    ) as session:
        results = benchkit.run(run_all(session.dsn, session.url, session.prefix, options))
    print(report(results, options))
    return 0


if __name__ == "__main__":
    benchkit.run_main(main)
