#!/usr/bin/env python3
"""Digging under BENCHMARKS.md §8's figures: raw SQL, no syncd server.

* ``plans``: what one live feed read costs PostgreSQL when it finds nothing (the case of 99 of
  100 filtered feeds woken by a push of one document). A collection with declared fields
  (``loadtests/partial_schema.json``, ``listId`` and ``region``) gets 3,000 documents in 100
  lists and 700 moves by ``UPDATE`` (the trigger writes the move records); then syncd's filtered
  statement (``syncd.db.filtered.pull_sql``) runs from the partition's head, 100 times per mode,
  with ``plan_cache_mode`` auto, force_custom_plan and force_generic_plan, next to ``SELECT 1``
  (the round trip alone); and ``EXPLAIN (ANALYZE, BUFFERS)`` of it under custom and generic
  plans.
* ``moves``: what a move-out costs PostgreSQL. Batches of 100 updates that all change
  ``listId``, through syncd's ``PUSH_SQL`` (asyncpg, one connection, autocommit), for
  ``--seconds`` each: into the collection without declared fields; into the one with them, as
  set up; the same with no declared field changing; with ``syncd_moves``' foreign key dropped;
  with the move trigger disabled. ``--rounds`` rounds; docs/s and the median ratio to the
  first.

::

    .venv/bin/python loadtests/partial_dig.py plans
    .venv/bin/python loadtests/partial_dig.py moves --rounds 3

An embedded PostgreSQL in a temporary directory, or a scratch database ``partialdig_<token>`` on a
loopback ``--database-url``; stopped/dropped at the end (also on Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import random
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import benchkit
import orjson
import partial_bench as pb

from syncd.db.filtered import pull_sql
from syncd.db.filtering import trigger_name
from syncd.db.store import PUSH_SQL
from syncd.db.urls import asyncpg_dsn

POOL = 2_000  # documents updated round-robin by the moves cells


async def plans(dsn: str, ids: dict[str, uuid.UUID]) -> None:
    cid = ids[pb.LIVE]
    conn = await benchkit.connect(dsn, "partial-dig")
    rng = random.Random(1)
    try:
        await conn.execute(pb.LOAD_SQL.format(list_expr=pb.BIG_LIST), cid, "x", 0, 2999)
        for _ in range(700):
            await conn.execute(
                "UPDATE syncd_documents SET data = jsonb_set(data, '{listId}', "
                "to_jsonb('l' || $2::int)) WHERE collection_id = $1 AND id = $3",
                cid, rng.randrange(100), f"d{rng.randrange(3000):09d}")
        await conn.execute("VACUUM ANALYZE syncd_documents")
        await conn.execute("VACUUM ANALYZE syncd_moves")
        head = await conn.fetchrow(
            "SELECT xid::text::bigint, seq FROM syncd_documents WHERE collection_id = $1"
            " ORDER BY xid DESC, seq DESC LIMIT 1", cid)
        sql = pull_sql(cid, ("listId",), "listId")
        args: list[Any] = ["", head[0], head[1], 1000, 0, [orjson.dumps("l5").decode()]]
        started = time.perf_counter()
        for _ in range(200):
            await conn.fetch("SELECT 1")
        print(f"SELECT 1: {(time.perf_counter() - started) / 200 * 1000:.3f} ms")
        for mode in ("auto", "force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            for _ in range(10):  # past the first five custom plans of a prepared statement
                await conn.fetch(sql, *args)
            started = time.perf_counter()
            for _ in range(100):
                await conn.fetch(sql, *args)
            print(f"filtered read from the head, nothing found, plan_cache_mode={mode}: "
                  f"{(time.perf_counter() - started) / 100 * 1000:.3f} ms")
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *args)
            print(f"--- EXPLAIN, {mode}")
            print("\n".join(row[0] for row in plan))
    finally:
        await conn.close()


def _doc(doc_id: str, version: int, list_id: str) -> dict[str, Any]:
    body = pb.doc(doc_id, version, list_id, "r0")
    body["_deleted"] = False  # as syncd stores it (syncd.conflicts.with_deleted_flag)
    return body


async def _moves_cell(conn: Any, cid: uuid.UUID, seconds: float, change: bool) -> float:
    await conn.execute("DELETE FROM syncd_documents WHERE collection_id = $1", cid)
    await conn.execute("DELETE FROM syncd_moves WHERE collection_id = $1", cid)
    await conn.execute("VACUUM syncd_documents")
    await conn.execute("VACUUM syncd_moves")
    docs = [_doc(f"m{i:06d}", 0, f"l{i % 100}") for i in range(POOL)]
    for start in range(0, POOL, 500):
        part = docs[start:start + 500]
        await conn.fetch(PUSH_SQL, cid, "", [d["id"] for d in part], [None] * len(part),
                         [orjson.dumps(d).decode() for d in part])
    await conn.execute("CHECKPOINT")
    position, version, done = 0, 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds and version < 1_000_000:
        version += 1
        ids, old, new = [], [], []
        for _ in range(100):
            before = docs[position]
            list_id = before["listId"]
            if change:
                list_id = f"l{(int(list_id[1:]) + 1) % 100}"
            after = _doc(before["id"], version, list_id)
            ids.append(before["id"])
            old.append(orjson.dumps(before).decode())
            new.append(orjson.dumps(after).decode())
            docs[position] = after
            position = (position + 1) % POOL
        written = await conn.fetch(PUSH_SQL, cid, "", ids, old, new)
        if len(written) != 100:
            raise RuntimeError(f"{len(written)} of 100 rows written")
        done += 100
    return done / (time.perf_counter() - started)


async def moves(dsn: str, ids: dict[str, uuid.UUID], rounds: int, seconds: float) -> None:
    filtered, plain = ids[pb.PUSH_FILTERED], ids[pb.PUSH_PLAIN]
    conn = await benchkit.connect(dsn, "partial-dig", statement_timeout="0")
    fk = await conn.fetchval("SELECT conname FROM pg_constraint "
                             "WHERE conrelid = 'syncd_moves'::regclass AND contype = 'f'")
    trigger = trigger_name(filtered)
    cells: list[tuple[str, uuid.UUID, bool, str, str]] = [
        ("no declared fields, listId changes", plain, True, "", ""),
        ("declared fields, as set up", filtered, True, "", ""),
        ("declared fields, no declared field changes", filtered, False, "", ""),
        ("declared fields, syncd_moves' foreign key dropped", filtered, True,
         f"ALTER TABLE syncd_moves DROP CONSTRAINT {fk}",
         f"ALTER TABLE syncd_moves ADD CONSTRAINT {fk} FOREIGN KEY (collection_id) "
         "REFERENCES syncd_collections (id) ON DELETE CASCADE"),
        ("declared fields, move trigger disabled", filtered, True,
         f"ALTER TABLE syncd_documents DISABLE TRIGGER {trigger}",
         f"ALTER TABLE syncd_documents ENABLE TRIGGER {trigger}"),
    ]
    rates: dict[str, list[float]] = {}
    try:
        for number in range(rounds):
            for label, cid, change, setup, undo in cells:
                if setup:
                    await conn.execute(setup)
                try:
                    rate = await _moves_cell(conn, cid, seconds, change)
                finally:
                    if undo:
                        await conn.execute(undo)
                rates.setdefault(label, []).append(rate)
                print(f"round {number + 1}  {label}: {rate:,.0f} docs/s", flush=True)
    finally:
        await conn.close()
    base = rates[cells[0][0]]
    print("| cell | docs/s | ratio to the first (median of rounds) |\n|---|---:|---:|")
    for label, values in rates.items():
        ratio = statistics.median(a / b for a, b in zip(values, base, strict=True))
        print(f"| {label} | {statistics.median(values):,.0f} | {ratio:.2f} |")


def main() -> int:
    parser = benchkit.argument_parser("Raw-SQL digs under BENCHMARKS.md §8")
    parser.add_argument("what", choices=("plans", "moves"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 0.5 <= args.seconds <= 60:
        parser.error("--rounds 1..20, --seconds 0.5..60")
    benchkit.exit_on_signals()
    scratch = Path(tempfile.mkdtemp(prefix="partialdig-"))
    try:
        with benchkit.scratch_database(args.database_url, "partialdig",
                                       secrets.token_hex(3)) as url:
            run(args, url, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def run(args: Any, url: str, scratch: Path) -> None:
    from syncd.db import migrate

    migrate.upgrade(url)
    for name, filters in ((pb.LIVE, True), (pb.PUSH_FILTERED, True), (pb.PUSH_PLAIN, False)):
        pb.register(url, name, filters, scratch)
    dsn = asyncpg_dsn(url)
    ids = benchkit.run(pb.collection_ids(dsn))
    if args.what == "plans":
        benchkit.run(plans(dsn, ids))
    else:
        benchkit.run(moves(dsn, ids, args.rounds, args.seconds))


if __name__ == "__main__":
    benchkit.run_main(main)
