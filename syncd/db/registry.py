"""The collection registry: which collections exist, with their RxDB schemas (SQLAlchemy ORM).

Collections change rarely (an operator runs ``syncd collections add``), so this side uses the
ORM for clarity; the document hot path is in ``store.py``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import delete, false, func, select, true
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from syncd.auth.access import AccessRule, AccessRuleError
from syncd.db import filtering
from syncd.db.models import CollectionRecord, DocumentRecord
from syncd.db.urls import sqlalchemy_url
from syncd.filters import FilterDeclarationError, check_declaration
from syncd.names import collection_name_problem
from syncd.placeholders import PlaceholderError, check_placeholders
from syncd.schema import SchemaError, compile_validator, primary_key_of, schema_version_of

# What registering did: a new collection, a changed one (newer schema or another access rule),
# or nothing (the same schema and rule again).
Registered = Literal["added", "updated", "unchanged"]


@dataclass(frozen=True, slots=True)
class CollectionDetails:
    """A collection as ``syncd collections show`` reports it."""

    name: str
    primary_key: str
    schema_version: int
    schema: dict[str, Any]
    access_rule: dict[str, Any] | None
    documents: int  # live documents, every partition
    tombstones: int  # deleted documents not yet purged
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Removed:
    documents: int
    tombstones: int


def _counts(documents: Any) -> tuple[Any, Any]:
    """count() of live documents and of tombstones, as two aggregate columns."""
    return (
        func.count().filter(documents.deleted == false()).label("documents"),
        func.count().filter(documents.deleted == true()).label("tombstones"),
    )


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
    ) -> tuple[CollectionRecord, Registered]:
        """Register a collection, or move it to a newer schema; return it and what changed.

        ``access`` (an access rule, see syncd/auth/access.py) replaces the stored one when
        given; without it an existing collection keeps its rule. A different schema under the
        stored version is refused: clients of that version would meet documents of two shapes,
        and none of them would learn that they are outdated."""
        problem = collection_name_problem(name)
        if problem is not None:
            raise SchemaError(problem)
        key, version = primary_key_of(schema).field, schema_version_of(schema)
        record, outcome, staged = await self._put_record(name, schema, access, key, version)
        if access is not None:
            # Declared filter fields: the trigger and indexes first, then the rule that lets
            # clients use them (staged held back the fields that were not served yet).
            await filtering.ensure(self._engine, record.id, _filter_fields(access))
            if staged != access:
                async with self._sessions() as session, session.begin():
                    stored = await session.get(CollectionRecord, record.id, with_for_update=True)
                    if stored is not None:
                        stored.access_rule = access
                record.access_rule = access
        return record, outcome

    async def _put_record(
        self, name: str, schema: dict[str, Any], access: dict[str, Any] | None, key: str,
        version: int,
    ) -> tuple[CollectionRecord, Registered, dict[str, Any] | None]:
        """Write the collection row; return it, what changed, and the access rule stored now
        (``access`` without the filter fields that have no trigger and indexes yet)."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                select(CollectionRecord).where(CollectionRecord.name == name).with_for_update()
            )
            record = result.scalar_one_or_none()
            _check_filters(schema, key, access if access is not None else (
                record.access_rule if record is not None else None))
            if record is None:
                staged = _staged(access, None)
                record = CollectionRecord(
                    id=uuid.uuid4(), name=name, primary_key=key, schema=schema,
                    schema_version=version, access_rule=staged,
                )
                session.add(record)
                return record, "added", staged
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
            if version == record.schema_version and schema != record.schema:
                raise SchemaError(
                    f"collection {name!r} is already registered at schema version {version} "
                    "with a different schema; raise \"version\" in the schema file (as the app's "
                    "RxDB schema does, with a migration strategy) to register the change"
                )
            if schema == record.schema and access in (None, record.access_rule):
                return record, "unchanged", record.access_rule
            record.schema, record.schema_version = schema, version
            staged = record.access_rule
            if access is not None:
                staged = record.access_rule = _staged(access, record.access_rule)
            return record, "updated", staged

    async def details(self, name: str) -> CollectionDetails | None:
        """The collection with its document and tombstone counts, in one statement."""
        c, d = CollectionRecord, DocumentRecord
        live, tombstones = _counts(d)
        query = (
            select(c.name, c.primary_key, c.schema_version, c.schema, c.access_rule,
                   c.created_at, c.updated_at, live, tombstones)
            .select_from(c)
            .outerjoin(d, d.collection_id == c.id)
            .where(c.name == name)
            .group_by(c.id)
        )
        async with self._sessions() as session:
            row = (await session.execute(query)).one_or_none()
        if row is None:
            return None
        return CollectionDetails(
            name=row.name, primary_key=row.primary_key, schema_version=row.schema_version,
            schema=row.schema, access_rule=row.access_rule, documents=row.documents,
            tombstones=row.tombstones, created_at=row.created_at, updated_at=row.updated_at,
        )

    async def remove(self, name: str) -> Removed | None:
        """Delete the collection and, through the foreign key's cascade, its documents; return
        how many went, or None when there is no such collection.

        The row is locked first, so the count is of the rows the cascade deletes: a push that
        inserts into the collection waits for the lock (its foreign key check), then fails."""
        c, d = CollectionRecord, DocumentRecord
        async with self._sessions() as session, session.begin():
            collection_id: uuid.UUID | None = await session.scalar(
                select(c.id).where(c.name == name).with_for_update()
            )
            if collection_id is None:
                return None
            live, tombstones = _counts(d)
            counts = select(live, tombstones).where(d.collection_id == collection_id)
            counted = (await session.execute(counts)).one()
            await session.execute(delete(c).where(c.id == collection_id))
        await filtering.ensure(self._engine, collection_id, ())
        return Removed(counted.documents, counted.tombstones)


def _filter_fields(access: dict[str, Any] | None) -> list[str]:
    filters = (access or {}).get("filters")
    return sorted(filters) if isinstance(filters, dict) else []


def _staged(access: dict[str, Any] | None, stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """``access`` with only the filter fields that are served already (declared in ``stored``):
    the others are added once their trigger and indexes exist."""
    if access is None or "filters" not in access:
        return access
    served = set(_filter_fields(stored))
    filters = {f: o for f, o in access["filters"].items() if f in served}
    staged = {k: v for k, v in access.items() if k != "filters"}
    if filters:
        staged["filters"] = filters
    return staged


def _check_filters(schema: dict[str, Any], key: str, access: dict[str, Any] | None) -> None:
    """Declared filter fields must be scalar properties with a valid deletion placeholder."""
    try:
        declared = AccessRule.parse(access).filters
        if declared:
            check_declaration(declared, schema)
            check_placeholders(schema, key, compile_validator(schema), tuple(declared))
    except (AccessRuleError, FilterDeclarationError, PlaceholderError) as exc:
        raise SchemaError(str(exc)) from None
