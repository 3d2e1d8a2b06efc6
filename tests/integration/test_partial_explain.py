"""A filtered pull reads what it sends, not the partition: EXPLAIN ANALYZE of the statement the
store runs, over 100,000 documents of which the filter keeps about 1 %, shows no sequential scan
of the documents or the move-out records and no sort over the partition (docs/partial-sync.md,
"Storage: what a filtered pull reads")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import orjson
import pytest

from syncd.db.urls import asyncpg_dsn
from tests.conftest import collection_id
from tests.partial import PLAIN_RULE, register_filtered
from tests.support import run

DOCUMENTS = 100_000
LISTS = 100  # listId = 'L0' .. 'L99': each list holds 1 % of the partition
TABLES = ("syncd_documents", "syncd_moves")

POPULATE_SQL = """
INSERT INTO syncd_documents (collection_id, partition, id, data)
SELECT $1, $2, 'x' || lpad(i::text, 7, '0'), jsonb_build_object(
    'id', 'x' || lpad(i::text, 7, '0'), 'listId', 'L' || (i % 100),
    'region', (ARRAY['north', 'south', 'west'])[1 + i % 3], 'title', 't' || i, 'n', i,
    'done', false, 'tags', '[]'::jsonb, 'kind', 'a', '_deleted', false)
FROM generate_series($3::int, $4::int) AS i
"""
# About 1,000 documents of every list leave for 'moved': move-out records in every list.
MOVE_SQL = """
UPDATE syncd_documents SET data = jsonb_set(data, '{listId}', '"moved"')
WHERE collection_id = $1 AND partition = $2 AND (data ->> 'n')::int % 97 = 0
"""


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def plan_problems(plan: dict[str, Any], *, max_sorted: int, max_read: int) -> list[str]:
    """What makes a plan read the partition rather than the filter's part of it: a sequential
    scan of the documents or the move records, a sort of more than ``max_sorted`` rows, or more
    than ``max_read`` rows read from them in all (returned plus removed by a filter)."""
    problems, read = [], 0
    for node in plan_nodes(plan):
        kind, relation = node["Node Type"], node.get("Relation Name")
        loops = node.get("Actual Loops", 1)
        if relation in TABLES:
            read += (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
                     + node.get("Rows Removed by Index Recheck", 0)) * loops
            if kind == "Seq Scan":
                problems.append(f"Seq Scan on {relation}")
        if kind in ("Sort", "Incremental Sort"):
            sorted_rows = node.get("Actual Rows", 0) * loops
            child = node.get("Plans", [{}])[0]
            below = child.get("Actual Rows", 0) * child.get("Actual Loops", 1)
            sorted_rows = max(sorted_rows, below)
            if sorted_rows > max_sorted:
                problems.append(f"{kind} of {sorted_rows} rows (key {node.get('Sort Key')})")
    if read > max_read:
        problems.append(f"{read} rows read from {'/'.join(TABLES)}")
    return problems


async def explain(conn: asyncpg.Connection, sql: str, args: list[Any], *,
                  generic: bool = False) -> dict[str, Any]:
    """EXPLAIN ANALYZE of ``sql`` with ``args``: the custom plan (the parameters' values known,
    as the first executions of a prepared statement), or the generic plan a prepared statement
    switches to after five executions."""
    if not generic:
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
    else:
        name = f"p_{uuid.uuid4().hex[:8]}"
        await conn.execute(f"PREPARE {name} AS {sql}")
        try:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            placeholders = ", ".join(f"${i + 1}" for i in range(len(args)))
            raw = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({placeholders})", *args)
        finally:
            await conn.execute("RESET plan_cache_mode")
            await conn.execute(f"DEALLOCATE {name}")
    document = orjson.loads(raw) if isinstance(raw, str) else raw
    top: dict[str, Any] = document[0]["Plan"]
    return top


@pytest.fixture(scope="module")
def big(database_url: str) -> str:
    """A collection with 100,000 documents in alice's partition (and 20,000 in bob's), ~1,000
    moved out of their lists, analysed."""
    name = register_filtered(database_url, PLAIN_RULE)

    async def fill() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            cid = await collection_id(conn, name)
            for start in range(0, DOCUMENTS, 20_000):  # five transactions, five xids
                await conn.execute(POPULATE_SQL, cid, "alice", start, start + 19_999)
            await conn.execute(POPULATE_SQL, cid, "bob", 0, 19_999)
            await conn.execute(MOVE_SQL, cid, "alice")
            await conn.execute("ANALYZE syncd_documents")
            await conn.execute("ANALYZE syncd_moves")
        finally:
            await conn.close()

    run(fill())
    return name


async def test_the_plan_checker_rejects_a_filter_applied_to_the_whole_partition(
    big: str, db: asyncpg.Connection
) -> None:
    """The harness itself: a naive filtered keyset query is caught."""
    naive = """
    SELECT d.data FROM syncd_documents AS d
    WHERE d.collection_id = $1 AND d.partition = $2 AND d.data ->> 'listId' = $3
      AND (d.xid, d.seq) > ('0'::xid8, 0)
    ORDER BY d.xid, d.seq LIMIT 100
    """
    cid = await collection_id(db, big)
    plan = await explain(db, naive, [cid, "alice", "L7"])
    assert plan_problems(plan, max_sorted=400, max_read=5_000), plan
