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

from syncd.checkpoint import ORIGIN, Position
from syncd.db import filtered
from syncd.db.urls import asyncpg_dsn
from syncd.filters import Filter
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
# About 7,700 documents move to the next list: move-out records in every list.
MOVE_SQL = """
UPDATE syncd_documents
SET data = jsonb_set(data, '{listId}', to_jsonb('L' || (((data ->> 'n')::int + 1) % 100)))
WHERE collection_id = $1 AND partition = $2 AND (data ->> 'n')::int % 13 = 0
"""


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def plan_read(plan: dict[str, Any]) -> int:
    """Rows read from the documents and the move records (returned plus filtered out)."""
    return sum(
        (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
         + node.get("Rows Removed by Index Recheck", 0)) * node.get("Actual Loops", 1)
        for node in plan_nodes(plan) if node.get("Relation Name") in TABLES
    )


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


def _literal(value: Any) -> str:
    """A SQL literal for EXECUTE's arguments (which take no parameters)."""
    if isinstance(value, bool) or value is None:
        raise TypeError(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    if isinstance(value, list):  # the filters' values: jsonb texts
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]::jsonb[]"
    raise TypeError(value)


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
            literals = ", ".join(_literal(arg) for arg in args)
            raw = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({literals})")
        finally:
            await conn.execute("RESET plan_cache_mode")
            await conn.execute(f"DEALLOCATE {name}")
    document = orjson.loads(raw) if isinstance(raw, str) else raw
    top: dict[str, Any] = document[0]["Plan"]
    return top


@pytest.fixture(scope="module")
def big(database_url: str) -> str:
    """A collection with 100,000 documents in alice's partition (and 20,000 in bob's), ~7,700
    moved to another list, analysed."""
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


def _json_values(*values: Any) -> list[str]:
    return [orjson.dumps(v).decode() for v in values]


async def _position_in(db: asyncpg.Connection, cid: uuid.UUID, list_id: str,
                       offset: int) -> Position:
    row = await db.fetchrow(
        "SELECT xid::text::bigint, seq FROM syncd_documents WHERE collection_id = $1 "
        "AND partition = 'alice' AND data -> 'listId' = to_jsonb($2::text) "
        "ORDER BY xid, seq OFFSET $3 LIMIT 1", cid, list_id, offset)
    assert row is not None
    return Position(row[0], row[1])


def _pull_statement(cid: uuid.UUID, flt: Filter, after: Position, floor: int,
                    limit: int) -> tuple[str, list[Any]]:
    """The statement and arguments FilteredReads.pull runs (syncd/db/filtered.py)."""
    driving = filtered.driving_field(flt)
    values = dict(flt)
    fields = tuple(name for name, _ in flt)
    others = [list(values[f]) for f in fields if f != driving]
    sql = filtered.pull_sql(cid, fields, driving)
    return sql, ["alice", after.xid, after.seq, limit, floor, list(values[driving]), *others]


def _filter(**fields: list[Any]) -> Filter:
    return tuple((name, tuple(sorted(_json_values(*values))))
                 for name, values in sorted(fields.items()))


CASES = {
    # A fresh replication's first page: no move-outs read (floor above every xid).
    "one list, first page": (_filter(listId=["L7"]), "origin", filtered.NO_FLOOR, 100),
    # A running replication from the middle of its list, move-outs included.
    "one list, continuing": (_filter(listId=["L7"]), "middle", 0, 100),
    "three lists, continuing": (_filter(listId=["L7", "L8", "L9"]), "middle", 0, 50),
}


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize("case", list(CASES))
async def test_a_filtered_pull_reads_its_part_of_the_partition_only(
    big: str, db: asyncpg.Connection, case: str, generic: bool
) -> None:
    flt, start, floor, limit = CASES[case]
    cid = await collection_id(db, big)
    after = ORIGIN if start == "origin" else await _position_in(db, cid, "L7", 400)
    sql, args = _pull_statement(cid, flt, after, floor, limit)
    plan = await explain(db, sql, args, generic=generic)
    values = len(flt[0][1])
    problems = plan_problems(plan, max_sorted=4 * limit * values, max_read=8 * limit * values)
    assert not problems, (problems, orjson.dumps(plan, option=orjson.OPT_INDENT_2).decode())
    print(f"\n{case}: {plan_read(plan):.0f} rows read for a page of {limit}")
    # And it is the page a client gets: full, in change order.
    rows = await db.fetch(sql, *args)
    assert len(rows) == limit
    assert [(r[4], r[5]) for r in rows] == sorted((r[4], r[5]) for r in rows)


async def test_two_fields_drive_by_the_field_with_fewer_values(
    big: str, db: asyncpg.Connection
) -> None:
    """listId in three lists AND region north keeps 1 % of the partition, like one list; the
    driving field is the one with fewer values (region), whatever its selectivity: what that
    costs is measured here (rows read for a page), not assumed."""
    cid = await collection_id(db, big)
    flt = _filter(listId=["L7", "L8", "L9"], region=["north"])
    assert filtered.driving_field(flt) == "region"
    sql, args = _pull_statement(cid, flt, ORIGIN, 0, 100)
    plan = await explain(db, sql, args)
    problems = plan_problems(plan, max_sorted=400, max_read=DOCUMENTS)
    assert not problems, (problems, orjson.dumps(plan, option=orjson.OPT_INDENT_2).decode())
    print(f"\ntwo fields, region driving: {plan_read(plan):.0f} rows read for a page of 100")


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_the_removal_of_a_filter_change_reads_the_old_selection_not_the_partition(
    big: str, db: asyncpg.Connection, generic: bool
) -> None:
    """Removal pages go in primary-key order over what the old filter selects (2 % here): a
    sort of that selection would do, a sort or a sequential scan of the partition would not.
    (PostgreSQL walks the primary key instead, filtering: about 9,400 rows read for a page of
    100 here, the whole partition over a whole removal; printed, not bounded.)"""
    cid = await collection_id(db, big)
    old, new = _filter(listId=["L7", "L8"]), _filter(listId=["L8"])
    sql = filtered.removal_sql(cid, tuple(f for f, _ in old), tuple(f for f, _ in new))
    after = await _position_in(db, cid, "L7", 400)
    args = ["alice", "", 100, after.xid, after.seq, 0,
            *[list(v) for _, v in old], *[list(v) for _, v in new]]
    plan = await explain(db, sql, args, generic=generic)
    selection = 2 * DOCUMENTS // LISTS
    problems = plan_problems(plan, max_sorted=2 * selection, max_read=DOCUMENTS)
    assert not problems, (problems, orjson.dumps(plan, option=orjson.OPT_INDENT_2).decode())
    rows = await db.fetch(sql, *args)
    assert len(rows) == 100 and [r[1] for r in rows] == sorted(r[1] for r in rows)
    print(f"\nremoval page: {plan_read(plan):.0f} rows read for a page of 100")
