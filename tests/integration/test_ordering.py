"""A pull never skips or reorders a committed change, whatever order writers commit in."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import asyncpg
import httpx
import orjson

from syncd import checkpoint as checkpoints
from syncd.checkpoint import ORIGIN, Position
from syncd.db import store as store_module
from syncd.db.store import DocumentStore
from syncd.db.urls import asyncpg_dsn
from tests.conftest import collection_id
from tests.support import SyncdProcess

INSERT_SQL = """
INSERT INTO syncd_documents (collection_id, id, data)
VALUES ($1, $2, jsonb_build_object('id', $2::text, 'title', 'sql', 'n', 0))
"""


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(asyncpg_dsn(url))


async def test_a_writer_that_commits_late_is_not_skipped(
    database_url: str, collection: str, db: asyncpg.Connection, store: DocumentStore
) -> None:
    cid = await collection_id(db, collection)
    late = await _connect(database_url)
    try:
        transaction = late.transaction()
        await transaction.start()
        await late.execute(INSERT_SQL, cid, "late")  # takes the smaller xid, commits last
        await db.execute(INSERT_SQL, cid, "early")  # commits first

        while_open = await store.pull(cid, "", ORIGIN, 10)
        # The committed "early" row lies above the open transaction's xid: it must wait, or a
        # checkpoint past it would leave "late" behind for good.
        assert while_open.documents == []

        await transaction.commit()
    finally:
        await late.close()
    page = await store.pull(cid, "", ORIGIN, 10)
    assert [orjson.loads(doc)["id"] for doc in page.documents] == ["late", "early"]


async def test_without_the_horizon_the_same_interleaving_loses_the_late_row(
    database_url: str, collection: str, db: asyncpg.Connection
) -> None:
    """The scenario above really exercises the gap: the naive keyset query skips a row."""
    cid = await collection_id(db, collection)
    naive_sql = store_module.PULL_SQL.replace(
        "AND d.xid < pg_snapshot_xmin(pg_current_snapshot())", ""
    )
    assert naive_sql != store_module.PULL_SQL
    late = await _connect(database_url)
    try:
        transaction = late.transaction()
        await transaction.start()
        await late.execute(INSERT_SQL, cid, "late")
        await db.execute(INSERT_SQL, cid, "early")
        first = await db.fetch(naive_sql, cid, "", 0, 0, 10)
        await transaction.commit()
    finally:
        await late.close()
    assert [orjson.loads(r[0])["id"] for r in first] == ["early"]
    after = first[-1]
    rest = await db.fetch(naive_sql, cid, "", after[1], after[2], 10)
    assert rest == []  # "late" committed below the checkpoint: skipped forever


# --- many writers, held transactions, plain SQL and HTTP pushes, a reader with small pages ---

SQL_UPSERT = """
INSERT INTO syncd_documents AS d (collection_id, id, data)
VALUES ($1, $2, jsonb_build_object('id', $2::text, 'title', 'sql', 'n', 1))
ON CONFLICT (collection_id, partition, id) DO UPDATE
SET data = jsonb_set(d.data, '{n}', to_jsonb((d.data ->> 'n')::int + 1))
"""


async def _sql_writer(url: str, cid: uuid.UUID, ids: list[str], rng: random.Random,
                      deadline: float, hold_ms: int) -> int:
    """Upserts in transactions held open for up to ``hold_ms``; each version bumps ``n``."""
    conn = await _connect(url)
    commits = 0
    try:
        while time.monotonic() < deadline:
            async with conn.transaction():
                for doc_id in sorted(rng.sample(ids, 3)):
                    await conn.execute(SQL_UPSERT, cid, doc_id)
                await asyncio.sleep(rng.uniform(0, hold_ms) / 1000)
            commits += 1
    finally:
        await conn.close()
    return commits


async def _http_pusher(client: httpx.AsyncClient, collection: str, ids: list[str],
                       rng: random.Random, deadline: float) -> int:
    """Read-modify-push with compare-and-set; retries on conflict with the returned state."""
    known: dict[str, dict[str, Any] | None] = dict.fromkeys(ids)
    writes = 0
    while time.monotonic() < deadline:
        doc_id = rng.choice(ids)
        assumed = known[doc_id]
        n = 1 if assumed is None else assumed["n"] + 1
        new = {"id": doc_id, "title": "http", "n": n, "_deleted": n % 5 == 0}
        row: dict[str, Any] = {"newDocumentState": new}
        if assumed is not None:
            row["assumedMasterState"] = assumed
        response = await client.post(f"/api/v1/sync/{collection}", json=[row])
        assert response.status_code == 200, response.text
        conflicts = response.json()
        if conflicts:
            known[doc_id] = conflicts[0]
        else:
            known[doc_id] = new
            writes += 1
    return writes


async def test_concurrent_writers_reader_ends_with_exact_state_in_order(
    database_url: str, collection: str, db: asyncpg.Connection, syncd: SyncdProcess
) -> None:
    cid = await collection_id(db, collection)
    sql_ids = [f"sql-{i}" for i in range(12)]
    http_ids = [f"http-{i}" for i in range(8)]
    deadline = time.monotonic() + 4.0
    seen: dict[str, list[int]] = {}
    positions: list[Position] = []
    epoch = await db.fetchval("SELECT to_hex(system_identifier) FROM pg_control_system()")

    async with httpx.AsyncClient(base_url=syncd.url, timeout=30) as client:

        async def pull_page(cp: dict[str, Any] | None) -> tuple[list[dict[str, Any]], Any]:
            params = {"limit": "3"}
            if cp is not None:
                params["checkpoint"] = orjson.dumps(cp).decode()
            response = await client.get(f"/api/v1/sync/{collection}", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            return body["documents"], body["checkpoint"]

        async def reader() -> dict[str, Any] | None:
            cp: dict[str, Any] | None = None
            writers_done_at: float | None = None
            while True:
                docs, next_cp = await pull_page(cp)
                for doc in docs:
                    seen.setdefault(doc["id"], []).append(doc["n"])
                if docs:
                    positions.append(checkpoints.decode(next_cp, epoch))
                    cp = next_cp
                    continue
                if writers_task.done():
                    writers_done_at = writers_done_at or time.monotonic()
                    if time.monotonic() - writers_done_at > 0.3:
                        return cp
                await asyncio.sleep(0.005)

        writers_task = asyncio.ensure_future(asyncio.gather(
            *(_sql_writer(database_url, cid, sql_ids, random.Random(s), deadline, hold)
              for s, hold in ((1, 50), (2, 0), (3, 20))),
            *(_http_pusher(client, collection, http_ids, random.Random(10 + s), deadline)
              for s in range(3)),
        ))
        final_cp = await asyncio.wait_for(reader(), timeout=60)
        commits = await writers_task

    assert sum(commits) > 50, commits  # the writers really ran concurrently with the reader
    stored = {
        r["id"]: orjson.loads(r["data"])
        for r in await db.fetch(
            "SELECT id, data FROM syncd_documents WHERE collection_id = $1", cid
        )
    }
    # The reader ends with exactly the final state of every document ...
    assert set(seen) == set(stored)
    for doc_id, versions in seen.items():
        assert versions[-1] == stored[doc_id]["n"], doc_id
        # ... and never got an older version after a newer one.
        assert versions == sorted(versions), (doc_id, versions)
    # Checkpoints only move forward, and a pull from the last one finds nothing new.
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    async with httpx.AsyncClient(base_url=syncd.url) as client:
        tail = await client.get(
            f"/api/v1/sync/{collection}",
            params={"checkpoint": orjson.dumps(final_cp).decode()},
        )
    assert tail.json()["documents"] == []
