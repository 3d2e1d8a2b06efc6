"""What serves a collection's declared filter fields: per-field partial expression indexes and
the trigger that records move-outs (docs/partial-sync.md, migration 0004_moves).

Per collection, so that collections without filters pay nothing: the indexes are partial
(``WHERE collection_id = '<id>'``) and the trigger's ``WHEN`` clause (evaluated in C, no function
call) fires only for that collection's rows whose declared fields changed. Indexes are built
``CONCURRENTLY``: a live collection keeps taking writes while a field is added.

Names carry the collection id and a digest of the field, so the objects of one collection are
found by prefix and an index no longer declared is dropped.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from syncd.filters import FIELD_NAME

DOCUMENT_INDEX_PREFIX = "syncd_f_"
MOVE_INDEX_PREFIX = "syncd_m_"
TRIGGER_PREFIX = "syncd_moves_"

FIND_INDEXES_SQL = """
SELECT c.relname, i.indisvalid
FROM pg_class AS c JOIN pg_index AS i ON i.indexrelid = c.oid
WHERE left(c.relname, length($1)) = $1
"""


def index_name(prefix: str, collection_id: uuid.UUID, field: str) -> str:
    return f"{prefix}{collection_id.hex}_{hashlib.md5(field.encode()).hexdigest()[:8]}"


def trigger_name(collection_id: uuid.UUID) -> str:
    return f"{TRIGGER_PREFIX}{collection_id.hex}"


def _literal(collection_id: uuid.UUID) -> str:
    return f"'{collection_id}'::uuid"  # a UUID's text is hex and dashes: safe as a literal


def _field(field: str) -> str:
    if not FIELD_NAME.fullmatch(field):  # parse_declaration admits no other name
        raise ValueError(f"not a filter field name: {field!r}")
    return field


def document_index_sql(collection_id: uuid.UUID, field: str) -> str:
    return (
        f"CREATE INDEX CONCURRENTLY {index_name(DOCUMENT_INDEX_PREFIX, collection_id, field)} "
        f"ON syncd_documents (partition, (data -> '{_field(field)}'), xid, seq) "
        f"WHERE collection_id = {_literal(collection_id)}"
    )


def move_index_sql(collection_id: uuid.UUID, field: str) -> str:
    return (
        f"CREATE INDEX CONCURRENTLY {index_name(MOVE_INDEX_PREFIX, collection_id, field)} "
        f"ON syncd_moves (partition, (old -> '{_field(field)}'), xid, seq) "
        f"WHERE collection_id = {_literal(collection_id)}"
    )


def trigger_sql(collection_id: uuid.UUID, fields: Iterable[str]) -> str:
    names = sorted(_field(f) for f in fields)
    changed = " OR ".join(
        f"(OLD.data -> '{f}') IS DISTINCT FROM (NEW.data -> '{f}')" for f in names
    )
    arguments = ", ".join(f"'{f}'" for f in names)
    return (
        f"CREATE OR REPLACE TRIGGER {trigger_name(collection_id)} "
        "AFTER UPDATE ON syncd_documents FOR EACH ROW "
        f"WHEN (OLD.collection_id = {_literal(collection_id)} AND ({changed})) "
        f"EXECUTE FUNCTION syncd_record_move({arguments})"
    )


async def ensure(engine: AsyncEngine, collection_id: uuid.UUID, fields: Iterable[str]) -> None:
    """Make the trigger and indexes serve exactly ``fields`` (none: remove them all).

    The trigger first: a move-out is recorded from the moment a field can be filtered on (the
    caller stores the rule afterwards). An index left invalid by an interrupted build is rebuilt.
    """
    wanted = sorted(set(fields))
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if wanted:
            await conn.exec_driver_sql(trigger_sql(collection_id, wanted))
        else:
            await conn.exec_driver_sql(
                f"DROP TRIGGER IF EXISTS {trigger_name(collection_id)} ON syncd_documents"
            )
        for prefix, build in ((DOCUMENT_INDEX_PREFIX, document_index_sql),
                              (MOVE_INDEX_PREFIX, move_index_sql)):
            existing = await _indexes(conn, prefix + collection_id.hex)
            expected = {index_name(prefix, collection_id, f): f for f in wanted}
            for name, valid in existing.items():
                if name not in expected or not valid:
                    await conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            for name, field in expected.items():
                if not existing.get(name, False):
                    await conn.exec_driver_sql(build(collection_id, field))


async def _indexes(conn: AsyncConnection, prefix: str) -> dict[str, bool]:
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    rows = await driver.fetch(FIND_INDEXES_SQL, prefix)
    return {row[0]: row[1] for row in rows}
