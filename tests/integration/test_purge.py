"""`syncd purge`: only tombstones older than the window go; live documents never do."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import httpx

from syncd.db import migrate
from syncd.db.store import PURGE_SQL
from syncd.db.urls import asyncpg_dsn
from tests.conftest import TODO_SCHEMA, register
from tests.support import PostgresServer, SyncdProcess, run


def _push(http: httpx.Client, collection: str, rows: list[dict[str, object]]) -> None:
    assert http.post(f"/api/v1/sync/{collection}", json=rows).json() == []


def _delete(http: httpx.Client, collection: str, doc_id: str) -> None:
    live = {"id": doc_id, "title": "t", "_deleted": False}
    _push(http, collection, [{"assumedMasterState": live,
                              "newDocumentState": {**live, "_deleted": True}}])


def _ids(http: httpx.Client, collection: str) -> set[str]:
    return {d["id"] for d in http.get(f"/api/v1/sync/{collection}").json()["documents"]}


def _age_tombstone(database_url: str, collection: str, doc_id: str, days: float) -> None:
    """Make a tombstone ``days`` old. The trigger stamps ``updated_at`` with now() on every
    write, so this session turns triggers off (session_replication_role, this connection only)
    instead of the test sleeping past a short window: a slow machine cannot blur the line."""

    async def age() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            await conn.execute("SET session_replication_role = replica")
            status = await conn.execute(
                "UPDATE syncd_documents SET updated_at = now() - make_interval(days => $3)"
                " WHERE collection_id = (SELECT id FROM syncd_collections WHERE name = $1)"
                " AND id = $2 AND deleted",
                collection, doc_id, days,
            )
            assert status == "UPDATE 1", status
        finally:
            await conn.close()

    run(age())


def _purge(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYNCD_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "syncd", "purge", *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_purge_removes_only_old_tombstones_of_the_chosen_collection(
    http: httpx.Client, syncd: SyncdProcess, database_url: str
) -> None:
    mine, other = register(database_url, TODO_SCHEMA), register(database_url, TODO_SCHEMA)
    for collection in (mine, other):
        _push(http, collection, [{"newDocumentState": {"id": i, "title": "t"}}
                                 for i in ("keep", "old", "new")])
        _delete(http, collection, "old")
        _delete(http, collection, "new")
        _age_tombstone(database_url, collection, "old", days=3)
        _age_tombstone(database_url, collection, "new", days=1)  # inside a 2-day window

    result = _purge(database_url, "--older-than-days", "2", "--collection", mine)
    assert result.returncode == 0, result.stderr
    assert "purged 1 tombstone" in result.stdout
    assert _ids(http, mine) == {"keep", "new"}  # the young tombstone stays, live docs stay
    assert _ids(http, other) == {"keep", "old", "new"}  # another collection is untouched


def test_purge_of_an_unknown_collection_is_an_error(syncd: SyncdProcess, database_url: str) -> None:
    result = _purge(database_url, "--older-than-days", "2", "--collection", "nope")
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    # Which database was looked in, then the refusal as the one last line.
    database, refusal = result.stderr.splitlines()
    assert database.startswith("syncd: database: ") and "(SYNCD_DATABASE_URL)" in database
    assert "'nope': no such collection" in refusal and "syncd collections list" in refusal
    assert "purged" not in result.stdout


def test_purge_needs_a_positive_window(database_url: str) -> None:
    result = _purge(database_url, "--older-than-days", "0")
    assert result.returncode == 2 and "positive" in result.stderr


def _purge_plans(url: str) -> dict[str, str]:
    """EXPLAIN of the purge's statement, for all collections and for one, as a custom and as
    a generic plan (asyncpg prepares it; PostgreSQL may switch to the generic one)."""

    async def explain() -> dict[str, str]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            plans = {}
            for mode in ("force_custom_plan", "force_generic_plan"):
                await conn.execute(f"SET plan_cache_mode = {mode}")
                # Every tombstone old enough (a first purge), or none yet (a daily one).
                for window in (0.0, 86400.0):
                    for collection in (None, "c1"):
                        rows = await conn.fetch("EXPLAIN " + PURGE_SQL, window, collection, 10_000)
                        plans[f"{mode}, window {window}, collection {collection}"] = "\n".join(
                            r[0] for r in rows)
            return plans
        finally:
            await conn.close()

    return asyncio.run(explain())


def test_the_purge_finds_tombstones_through_an_index_not_a_table_scan(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database()
    try:
        async def fill() -> None:
            conn = await asyncpg.connect(asyncpg_dsn(url))
            try:
                await conn.execute(
                    "INSERT INTO syncd_collections (id, name, primary_key, schema, schema_version)"
                    " SELECT gen_random_uuid(), 'c' || n, 'id', '{}', 0"
                    " FROM generate_series(1, 4) AS n")
                # 200,000 documents in 4 collections, one in 20 of them a tombstone.
                await conn.execute(
                    "INSERT INTO syncd_documents (collection_id, id, data)"
                    " SELECT c.id, 'd' || g, jsonb_build_object('id', 'd' || g,"
                    " '_deleted', g % 20 = 0)"
                    " FROM syncd_collections AS c, generate_series(1, 50000) AS g")
                await conn.execute("ANALYZE syncd_documents")
            finally:
                await conn.close()

        asyncio.run(fill())
        for case, plan in _purge_plans(url).items():
            assert "ix_syncd_documents_tombstones" in plan, f"{case}:\n{plan}"
            assert "Seq Scan on syncd_documents" not in plan, f"{case}:\n{plan}"

        # The check can fail: without the migration's index the purge scans the table (or,
        # for one collection, every document of it through the primary key).
        migrate.downgrade(url, "0001")
        for case, plan in _purge_plans(url).items():
            assert "ix_syncd_documents_tombstones" not in plan
            if "collection None" in case:
                assert "Seq Scan on syncd_documents" in plan, f"{case}:\n{plan}"
    finally:
        postgres.drop_database(url)
