"""The collection registry: which collections exist, with their RxDB schemas (SQLAlchemy ORM).

Collections change rarely (an operator runs ``syncd collections add``), so this side uses the
ORM for clarity; the document hot path is in ``store.py``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from syncd.db.models import CollectionRecord
from syncd.db.urls import sqlalchemy_url
from syncd.schema import SchemaError, primary_key_of, schema_version_of


class CollectionRegistry:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def connect(cls, database_url: str, *, pool_size: int = 2) -> CollectionRegistry:
        return cls(
            create_async_engine(
                sqlalchemy_url(database_url), pool_size=pool_size, max_overflow=2,
                pool_pre_ping=True,
            )
        )

    async def close(self) -> None:
        await self._engine.dispose()

    async def get(self, name: str) -> CollectionRecord | None:
        async with self._sessions() as session:
            result = await session.execute(
                select(CollectionRecord).where(CollectionRecord.name == name)
            )
            return result.scalar_one_or_none()

    async def list(self) -> list[CollectionRecord]:
        async with self._sessions() as session:
            result = await session.execute(select(CollectionRecord).order_by(CollectionRecord.name))
            return list(result.scalars())

    async def put(
        self, name: str, schema: dict[str, Any], access: dict[str, Any] | None = None
    ) -> tuple[CollectionRecord, bool]:
        """Register a collection, or move it to a newer schema; return it and whether it is new.

        ``access`` (an access rule, see syncd/auth/access.py) replaces the stored one when
        given; without it an existing collection keeps its rule."""
        key, version = primary_key_of(schema).field, schema_version_of(schema)
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                select(CollectionRecord).where(CollectionRecord.name == name).with_for_update()
            )
            record = result.scalar_one_or_none()
            if record is None:
                record = CollectionRecord(
                    name=name, primary_key=key, schema=schema, schema_version=version,
                    access_rule=access,
                )
                session.add(record)
                return record, True
            if version < record.schema_version:
                raise SchemaError(
                    f"collection {name!r} is at schema version {record.schema_version}; "
                    f"refusing to go back to version {version}"
                )
            if key != record.primary_key:
                raise SchemaError(
                    f"collection {name!r} has primary key {record.primary_key!r}; a schema "
                    f"with primary key {key!r} needs a new collection"
                )
            record.schema, record.schema_version = schema, version
            if access is not None:
                record.access_rule = access
            return record, False
