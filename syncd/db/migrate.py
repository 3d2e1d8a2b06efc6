"""Apply and check alembic migrations (the scripts live in the top-level ``migrations/``)."""

from __future__ import annotations

import asyncio
from importlib.resources import files

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from syncd.db.urls import VERSION_TABLE, asyncpg_dsn


class SchemaOutOfDate(RuntimeError):
    """The database's syncd tables are missing or older than this syncd."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("syncd.migrations")))
    # alembic's ini interpolation treats % specially; URL-encoded passwords contain it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
    assert head is not None
    return head


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def current_revision(database_url: str) -> str | None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSION_TABLE)
        if not exists:
            return None
        value = await conn.fetchval(f"SELECT version_num FROM {VERSION_TABLE}")
        return str(value) if value is not None else None
    finally:
        await conn.close()


async def ensure_current(database_url: str) -> None:
    """Refuse to serve a database whose syncd schema is not at this syncd's head revision."""
    current, head = await current_revision(database_url), head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutOfDate(
            "the database has no syncd tables yet; run `syncd migrate` (with the same "
            "SYNCD_DATABASE_URL) before `syncd serve`"
        )
    raise SchemaOutOfDate(
        f"the database's syncd schema is at revision {current}, this syncd needs {head}; "
        "run `syncd migrate` before `syncd serve`"
    )


def ensure_current_sync(database_url: str) -> None:
    asyncio.run(ensure_current(database_url))
