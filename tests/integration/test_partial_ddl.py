"""What serves declared filter fields (syncd/db/filtering.py): per-collection partial indexes and
the move-out trigger, created without downtime, changed and removed with the rule, undone by the
migration's downgrade; move-out records purged with tombstones."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from syncd.db import filtering, migrate
from syncd.db.registry import CollectionRegistry
from syncd.db.urls import asyncpg_dsn
from syncd.schema import SchemaError
from tests.support import run

pytestmark = pytest.mark.postgres

SCHEMA: dict[str, Any] = {
    "version": 0,
    "primaryKey": "id",
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 100},
        "listId": {"type": "string"},
        "region": {"type": "string"},
        "title": {"type": "string"},
        "tags": {"type": "array"},
    },
    "required": ["id", "title"],
    "additionalProperties": False,
}


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    result: list[asyncpg.Record] = run(_fetch(url, sql, *args))
    return result


def put(url: str, name: str, access: dict[str, Any] | None, schema: dict[str, Any] = SCHEMA,
        ) -> uuid.UUID:
    async def go() -> uuid.UUID:
        registry = CollectionRegistry.connect(url, pool_size=1)
        try:
            record, _ = await registry.put(name, schema, access)
            return record.id
        finally:
            await registry.close()

    result: uuid.UUID = run(go())
    return result


def objects(url: str, collection_id: uuid.UUID) -> dict[str, Any]:
    """The collection's filter indexes (name -> definition) and its trigger's definition."""
    indexes = fetch(url, "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE $1",
                    f"%{collection_id.hex}%")
    trigger = fetch(url, "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = $1",
                    filtering.trigger_name(collection_id))
    return {"indexes": {r[0]: r[1] for r in indexes},
            "trigger": trigger[0][0] if trigger else None}


def rule(url: str, name: str) -> Any:
    return fetch(url, "SELECT access_rule FROM syncd_collections WHERE name = $1", name)[0][0]


def test_declared_fields_get_partial_indexes_and_a_trigger_others_get_nothing(
    migrated_url: str,
) -> None:
    plain = put(migrated_url, "plain", {"partition_claim": "sub"})
    assert objects(migrated_url, plain) == {"indexes": {}, "trigger": None}

    cid = put(migrated_url, "lists", {"filters": {"listId": {}, "region": {}}})
    found = objects(migrated_url, cid)
    assert len(found["indexes"]) == 4  # documents and move-outs, per field
    for definition in found["indexes"].values():
        assert f"WHERE (collection_id = '{cid}'::uuid)" in definition
    assert any("syncd_documents" in d and "(data -> 'listId'::text)" in d
               for d in found["indexes"].values())
    assert any("syncd_moves" in d and "(old -> 'region'::text)" in d
               for d in found["indexes"].values())
    assert "AFTER UPDATE ON public.syncd_documents" in found["trigger"]
    assert f"(old.collection_id = '{cid}'::uuid)" in found["trigger"]
    assert "syncd_record_move('listId', 'region')" in found["trigger"]
    assert orjson.loads(rule(migrated_url, "lists")) == {
        "filters": {"listId": {}, "region": {}}}

    # Fewer fields: the dropped one's indexes go, the trigger watches the rest.
    put(migrated_url, "lists", {"filters": {"region": {}}})
    found = objects(migrated_url, cid)
    assert len(found["indexes"]) == 2
    assert all("region" in d for d in found["indexes"].values())
    assert "syncd_record_move('region')" in found["trigger"]
    # None: nothing is left.
    put(migrated_url, "lists", {})
    assert objects(migrated_url, cid) == {"indexes": {}, "trigger": None}


def test_the_trigger_records_changes_of_declared_fields_of_its_collection_only(
    migrated_url: str,
) -> None:
    cid = put(migrated_url, "watched", {"filters": {"listId": {}}})
    other = put(migrated_url, "unwatched", None)
    for collection_id in (cid, other):
        fetch(migrated_url, "INSERT INTO syncd_documents (collection_id, id, data) VALUES "
              "($1, 'a', '{\"id\": \"a\", \"title\": \"t\", \"listId\": \"l1\"}')", collection_id)
        fetch(migrated_url, "UPDATE syncd_documents SET data = data || '{\"title\": \"u\"}' "
              "WHERE collection_id = $1", collection_id)  # not a declared field: no record
        fetch(migrated_url, "UPDATE syncd_documents SET data = data || '{\"listId\": \"l2\"}' "
              "WHERE collection_id = $1", collection_id)
    moves = fetch(migrated_url, "SELECT m.collection_id, m.id, m.old::text, m.xid = d.xid AS "
                  "same_xid, m.seq = d.seq AS same_seq FROM syncd_moves m JOIN syncd_documents d"
                  " USING (collection_id, partition, id)")
    assert [(r[0], r[1], orjson.loads(r[2]), r[3], r[4]) for r in moves] == [
        (cid, "a", {"listId": "l1"}, True, True)
    ]


def test_a_field_is_added_to_a_live_collection_while_it_takes_writes(migrated_url: str) -> None:
    name = "live"
    cid = put(migrated_url, name, None)
    fetch(migrated_url, "INSERT INTO syncd_documents (collection_id, id, data) SELECT $1, "
          "'d' || i, jsonb_build_object('id', 'd' || i, 'title', 't', 'listId', 'l' || i % 10) "
          "FROM generate_series(1, 20000) AS i", cid)

    async def write_while(done: asyncio.Event) -> int:
        conn = await asyncpg.connect(asyncpg_dsn(migrated_url))
        writes = 0
        try:
            while not done.is_set() and writes < 100_000:
                await conn.execute(
                    "UPDATE syncd_documents SET data = data || jsonb_build_object('listId', "
                    "'l' || (random() * 10)::int) WHERE collection_id = $1 AND id = $2",
                    cid, f"d{writes % 20000 + 1}")
                writes += 1
        finally:
            await conn.close()
        return writes

    async def scenario() -> tuple[int, float]:
        done = asyncio.Event()
        writer = asyncio.create_task(write_while(done))
        started = time.monotonic()
        registry = CollectionRegistry.connect(migrated_url, pool_size=1)
        try:
            await registry.put(name, SCHEMA, {"filters": {"listId": {}}})
        finally:
            await registry.close()
        took = time.monotonic() - started
        done.set()
        return await writer, took

    writes, _ = run(scenario())
    assert writes > 0  # the writer was never refused nor stopped by the index builds
    found = objects(migrated_url, cid)
    assert len(found["indexes"]) == 2
    valid = fetch(migrated_url, "SELECT bool_and(i.indisvalid) FROM pg_index i JOIN pg_class c "
                  "ON c.oid = i.indexrelid WHERE c.relname LIKE $1", f"%{cid.hex}%")
    assert valid[0][0] is True
    # Every change of listId after the rule was stored left a record.
    before = fetch(migrated_url, "SELECT count(*) FROM syncd_moves WHERE collection_id = $1", cid)
    fetch(migrated_url, "UPDATE syncd_documents SET data = data || '{\"listId\": \"zz\"}' "
          "WHERE collection_id = $1 AND id = 'd1'", cid)
    after = fetch(migrated_url, "SELECT count(*) FROM syncd_moves WHERE collection_id = $1", cid)
    assert after[0][0] == before[0][0] + 1


def test_an_index_left_invalid_by_an_interrupted_build_is_rebuilt(migrated_url: str) -> None:
    cid = put(migrated_url, "broken", {"filters": {"listId": {}}})
    name = filtering.index_name(filtering.DOCUMENT_INDEX_PREFIX, cid, "listId")
    fetch(migrated_url, "UPDATE pg_index SET indisvalid = false WHERE indexrelid = $1::regclass",
          name)
    put(migrated_url, "broken", {"filters": {"listId": {}}})
    valid = fetch(migrated_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = $1::regclass",
                  name)
    assert valid[0][0] is True


def test_removing_a_collection_removes_its_indexes_and_trigger(migrated_url: str) -> None:
    cid = put(migrated_url, "gone", {"filters": {"listId": {}}})

    async def remove() -> None:
        registry = CollectionRegistry.connect(migrated_url, pool_size=1)
        try:
            assert await registry.remove("gone") is not None
        finally:
            await registry.close()

    run(remove())
    assert objects(migrated_url, cid) == {"indexes": {}, "trigger": None}


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"tags": {}}, "filter field 'tags' must have type string"),
        ({"nope": {}}, "'nope' is not a top-level property"),
        ({"listId": {"claim": 1}}, "filters.listId.claim must be a non-empty string"),
    ],
)
def test_an_unservable_declaration_is_refused_before_anything_is_created(
    migrated_url: str, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(SchemaError, match=message):
        put(migrated_url, "refused", {"filters": filters})
    assert fetch(migrated_url, "SELECT count(*) FROM syncd_collections")[0][0] == 0
    assert fetch(migrated_url, "SELECT count(*) FROM pg_indexes WHERE indexname LIKE "
                 "'syncd\\_f\\_%'")[0][0] == 0


def test_collections_add_refuses_filters_without_a_valid_placeholder_in_one_line(
    migrated_url: str, tmp_path: Path
) -> None:
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"],
                                       "title": {"type": "string", "pattern": "^[A-Z]"}}}
    (tmp_path / "s.json").write_bytes(orjson.dumps(schema))
    (tmp_path / "a.json").write_bytes(orjson.dumps({"filters": {"listId": {}}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["SYNCD_DATABASE_URL"] = migrated_url
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "collections", "add", "todos", "--schema",
         str(tmp_path / "s.json"), "--access", str(tmp_path / "a.json")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("syncd: database")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("syncd: filters need a valid deletion placeholder")
    assert "title" in lines[0]


def test_the_downgrade_removes_every_collection_s_filter_objects(migrated_url: str) -> None:
    cid = put(migrated_url, "lists", {"partition_claim": "sub", "filters": {"listId": {}}})
    migrate.downgrade(migrated_url, "0003_nodes")
    assert objects(migrated_url, cid) == {"indexes": {}, "trigger": None}
    assert fetch(migrated_url, "SELECT to_regclass('syncd_moves')")[0][0] is None
    assert orjson.loads(rule(migrated_url, "lists")) == {"partition_claim": "sub"}
    # A plain write still works (no trigger calls a missing function).
    fetch(migrated_url, "INSERT INTO syncd_documents (collection_id, id, data) VALUES "
          "($1, 'a', '{\"id\": \"a\", \"title\": \"t\"}')", cid)
    fetch(migrated_url, "UPDATE syncd_documents SET data = data || '{\"listId\": \"x\"}'")
    migrate.upgrade(migrated_url)


def test_purge_removes_old_move_out_records(migrated_url: str) -> None:
    cid = put(migrated_url, "lists", {"filters": {"listId": {}}})
    fetch(migrated_url, "INSERT INTO syncd_documents (collection_id, id, data) VALUES "
          "($1, 'a', '{\"id\": \"a\", \"title\": \"t\", \"listId\": \"l1\"}')", cid)
    for value in ("l2", "l3"):
        fetch(migrated_url, "UPDATE syncd_documents SET data = data || jsonb_build_object("
              "'listId', $2::text) WHERE collection_id = $1", cid, value)
    fetch(migrated_url, "UPDATE syncd_moves SET moved_at = now() - interval '3 days' "
          "WHERE old->>'listId' = 'l1'")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["SYNCD_DATABASE_URL"] = migrated_url
    result = subprocess.run([sys.executable, "-m", "syncd", "purge", "--older-than-days", "2"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "purged 0 tombstone(s) and 1 move-out record(s)" in result.stdout
    left = fetch(migrated_url, "SELECT old->>'listId' FROM syncd_moves")
    assert [r[0] for r in left] == ["l2"]
