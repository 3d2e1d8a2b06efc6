"""The alembic migrations on a real PostgreSQL: up, down to nothing, up again; and the models agree.

These tests are synchronous on purpose: alembic's env.py runs its own event loop.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.types import UserDefinedType

from syncd.db import migrate
from syncd.db.models import Base
from syncd.db.urls import VERSION_TABLE, asyncpg_dsn, sqlalchemy_url
from tests.support import PostgresServer

pytestmark = pytest.mark.postgres

TABLES = {"syncd_collections", "syncd_documents", "syncd_nodes", "syncd_moves"}
FUNCTION = "syncd_stamp_change"
SEQUENCE = "syncd_change_seq"
TRIGGER = "syncd_documents_stamp"
INDEXES = {
    "pk_syncd_collections",
    "uq_syncd_collections_name",
    "pk_syncd_documents",
    "ix_syncd_documents_changes",
    "ix_syncd_documents_tombstones",
    "pk_syncd_nodes",
    "pk_syncd_moves",
    "ix_syncd_moves_moved_at",
    f"{VERSION_TABLE}_pkc",
}


@pytest.fixture()
def fresh_url(postgres: PostgresServer) -> Iterator[str]:
    """A new, empty (not migrated) database, dropped afterwards."""
    url = postgres.create_database(migrated=False)
    yield url
    postgres.drop_database(url)


def _fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(go())


def _catalog(url: str) -> dict[str, set[str]]:
    """What of syncd's exists in the database's public schema, read from pg_catalog."""
    relations = _fetch(
        url,
        "SELECT c.relname, c.relkind::text AS relkind FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relname LIKE '%syncd%'",
    )
    functions = _fetch(
        url,
        "SELECT p.proname FROM pg_catalog.pg_proc p "
        "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'public' AND p.proname LIKE 'syncd\\_%'",
    )
    triggers = _fetch(
        url,
        "SELECT tgname FROM pg_catalog.pg_trigger "
        "WHERE NOT tgisinternal AND tgname LIKE 'syncd\\_%'",
    )
    return {
        "tables": {r["relname"] for r in relations if r["relkind"] == "r"},
        "sequences": {r["relname"] for r in relations if r["relkind"] == "S"},
        "indexes": {r["relname"] for r in relations if r["relkind"] == "i"},
        "functions": {r["proname"] for r in functions},
        "triggers": {r["tgname"] for r in triggers},
    }


def _assert_migrated(url: str) -> None:
    found = _catalog(url)
    assert found["tables"] == {*TABLES, VERSION_TABLE}
    assert found["sequences"] == {SEQUENCE}
    assert found["indexes"] == INDEXES
    assert found["functions"] == {FUNCTION, "syncd_record_move"}
    assert found["triggers"] == {TRIGGER}
    assert asyncio.run(migrate.current_revision(url)) == migrate.head_revision()


def test_upgrade_downgrade_to_base_and_upgrade_again(fresh_url: str) -> None:
    assert asyncio.run(migrate.current_revision(fresh_url)) is None

    migrate.upgrade(fresh_url)
    _assert_migrated(fresh_url)

    migrate.downgrade(fresh_url, "base")
    found = _catalog(fresh_url)
    # Only alembic's (now empty) version table is left behind.
    assert found["tables"] == {VERSION_TABLE}
    assert found["sequences"] == set()
    assert found["indexes"] == {f"{VERSION_TABLE}_pkc"}
    assert found["functions"] == set()
    assert found["triggers"] == set()
    assert asyncio.run(migrate.current_revision(fresh_url)) is None

    migrate.upgrade(fresh_url)
    _assert_migrated(fresh_url)
    # The trigger is live again: a plain-SQL insert is stamped and gets its _deleted flag.
    rows = _fetch(
        fresh_url,
        "WITH c AS (INSERT INTO syncd_collections (id, name, primary_key, schema, schema_version) "
        "VALUES (gen_random_uuid(), 't', 'id', '{}', 0) RETURNING id) "
        "INSERT INTO syncd_documents (collection_id, id, data) "
        "SELECT id, 'a', '{\"id\": \"a\"}' FROM c RETURNING xid::text, seq, deleted, data::text",
    )
    assert len(rows) == 1
    assert int(rows[0]["xid"]) > 0 and rows[0]["seq"] >= 1 and rows[0]["deleted"] is False
    assert '"_deleted": false' in rows[0]["data"]


def _include_name(name: str | None, type_: str, _parent: Any) -> bool:
    # The same filter as migrations/env.py: syncd may share its database with other tables.
    return type_ != "table" or str(name).startswith("syncd_")


def _differences(url: str, metadata: MetaData) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_name": _include_name,
                "version_table": VERSION_TABLE,
            },
        )
        diffs: list[Any] = compare_metadata(context, metadata)
        return diffs

    async def go() -> list[Any]:
        engine = create_async_engine(sqlalchemy_url(url), poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    with warnings.catch_warnings():
        # SQLAlchemy cannot reflect xid8 (it warns and skips it); checked from pg_catalog below.
        warnings.filterwarnings("ignore", "Did not recognize type 'xid8'", exc.SAWarning)
        return asyncio.run(go())


def test_models_match_migrations(fresh_url: str) -> None:
    migrate.upgrade(fresh_url)

    assert _differences(fresh_url, Base.metadata) == []

    # The comparison does see syncd's tables (and ignores alembic's version table): against an
    # empty model it would drop exactly them.
    removed = {
        diff[1].name for diff in _differences(fresh_url, MetaData()) if diff[0] == "remove_table"
    }
    assert removed == TABLES

    # What autogenerate cannot compare: user-defined types (xid8) and collations.
    columns = _fetch(
        fresh_url,
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, "
        "co.collname FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation "
        "WHERE c.relname = ANY($1::text[]) AND a.attnum > 0 AND NOT a.attisdropped",
        sorted(TABLES),
    )
    in_database = {(r["relname"], r["attname"]): (r["type"], r["collname"]) for r in columns}
    in_models = {
        (table.name, column.name): column
        for table in Base.metadata.tables.values()
        for column in table.columns
    }
    assert set(in_database) == set(in_models)
    for key, column in in_models.items():
        db_type, db_collation = in_database[key]
        if isinstance(column.type, UserDefinedType):
            assert db_type == column.type.get_col_spec(), key
        collation = getattr(column.type, "collation", None)
        if collation is not None:
            assert db_collation == collation, key
        elif db_type in ("text", "character varying(128)"):
            assert db_collation == "default", key
