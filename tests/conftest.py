"""Fixtures that build the world: a real PostgreSQL, a migrated database, a real syncd process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from syncd.db.registry import CollectionRegistry
from syncd.db.store import DocumentStore
from syncd.db.urls import asyncpg_dsn
from tests.support import PostgresServer, SyncdProcess, run

TODO_SCHEMA: dict[str, Any] = {
    "title": "todo",
    "version": 0,
    "primaryKey": "id",
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": 200},
        "title": {"type": "string"},
        "done": {"type": "boolean"},
        "n": {"type": "integer"},
        "payload": {},
    },
    "required": ["id", "title"],
    "additionalProperties": False,
}


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    return PostgresServer()


@pytest.fixture(scope="session")
def database_url(postgres: PostgresServer) -> Iterator[str]:
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture()
def migrated_url(postgres: PostgresServer) -> Iterator[str]:
    """A database of its own, migrated, for a test that must not share the session's."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture()
def unmigrated_url(postgres: PostgresServer) -> Iterator[str]:
    """A database of its own that no migration has touched."""
    url = postgres.create_database(migrated=False)
    yield url
    postgres.drop_database(url)


@pytest.fixture(scope="session")
def syncd(database_url: str) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url)
    yield server
    server.stop()


@pytest.fixture()
def http(syncd: SyncdProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=syncd.url, timeout=60.0) as client:
        yield client


def register(
    database_url: str,
    schema: dict[str, Any],
    name: str | None = None,
    access: dict[str, Any] | None = None,
) -> str:
    """Register a collection with a fresh name (and an access rule) and return the name."""
    name = name or f"c_{uuid.uuid4().hex[:10]}"

    async def put() -> None:
        registry = CollectionRegistry.connect(database_url, pool_size=1)
        try:
            await registry.put(name, schema, access)
        finally:
            await registry.close()

    run(put())
    return name


@pytest.fixture()
def collection(database_url: str) -> str:
    """A fresh, empty collection with TODO_SCHEMA."""
    return register(database_url, TODO_SCHEMA)


@pytest.fixture()
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, for checking what was really stored."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    yield conn
    await conn.close()


@pytest.fixture()
async def store(database_url: str) -> AsyncIterator[DocumentStore]:
    """The storage layer itself, for tests that need to reach under the HTTP API."""
    opened = await DocumentStore.open(
        database_url, min_size=1, max_size=4, statement_timeout_ms=30_000
    )
    yield opened
    await opened.close()


async def collection_id(db: asyncpg.Connection, name: str) -> uuid.UUID:
    value = await db.fetchval("SELECT id FROM syncd_collections WHERE name = $1", name)
    assert isinstance(value, uuid.UUID)
    return value
