"""Table definitions (SQLAlchemy 2.0 declarative); the alembic migrations create exactly these.

The change-ordering columns ``xid`` and ``seq`` and the ``deleted`` flag are set by a trigger
(see migrations), never by Python, so rows written with plain SQL by another service are ordered
and streamed exactly like pushes through syncd.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id type (never wraps around)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s",
            "ix": "ix_%(table_name)s_%(column_0_name)s",
        }
    )


class CollectionRecord(Base):
    __tablename__ = "syncd_collections"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    primary_key: Mapped[str] = mapped_column(String(128))
    schema: Mapped[dict[str, Any]] = mapped_column(JSONB)
    schema_version: Mapped[int] = mapped_column(Integer)
    # Who may read and write, and how documents are partitioned; null means "shared, open".
    access_rule: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class DocumentRecord(Base):
    __tablename__ = "syncd_documents"
    __table_args__ = (
        # Serves every pull as one index range scan in change order.
        Index("ix_syncd_documents_changes", "collection_id", "partition", "xid", "seq"),
        # What `syncd purge` finds old tombstones with (migration 0002_tombstones).
        Index("ix_syncd_documents_tombstones", "collection_id", "updated_at",
              postgresql_where=text("deleted")),
    )

    collection_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("syncd_collections.id", ondelete="CASCADE"), primary_key=True
    )
    # The owner or tenant of the row; '' when the collection is shared. Part of the key, so one
    # tenant can never read, overwrite or probe another's document by guessing its id.
    partition: Mapped[str] = mapped_column(
        Text(collation="C"), primary_key=True, server_default=text("''")
    )
    id: Mapped[str] = mapped_column(Text(collation="C"), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    xid: Mapped[int] = mapped_column(Xid8)
    seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class MoveRecord(Base):
    """A move-out: a document's declared filter fields changed (docs/partial-sync.md).

    Written only by a collection's trigger (syncd/db/filtering.py), at the ``(xid, seq)`` of the
    version that changed them; ``old`` holds the declared fields' previous values."""

    __tablename__ = "syncd_moves"
    __table_args__ = (Index("ix_syncd_moves_moved_at", "moved_at"),)

    collection_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("syncd_collections.id", ondelete="CASCADE"), primary_key=True
    )
    partition: Mapped[str] = mapped_column(Text(collation="C"), primary_key=True)
    xid: Mapped[int] = mapped_column(Xid8, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[str] = mapped_column(Text(collation="C"))
    old: Mapped[dict[str, Any]] = mapped_column(JSONB)
    moved_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class NodeRecord(Base):
    """One running node's heartbeat (syncd/admin/heartbeat.py): what the admin page shows of it.

    Written by the node itself every ``SYNCD_ADMIN_HEARTBEAT_SECONDS`` and deleted when it shuts
    down; a row not refreshed for three of its intervals is a node that died (not shown)."""

    __tablename__ = "syncd_nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(Text)  # the address it serves (--host)
    port: Mapped[int] = mapped_column(Integer)
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_seconds: Mapped[float] = mapped_column(Double)
    # Open live streams per way in: {"native": 3, "rxdb-server": 0, "rxdb-ws": 1}.
    subscribers: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Totals since the node started (syncd/metrics.py): documents pushed and pulled, conflicts.
    pushed: Mapped[int] = mapped_column(BigInteger)
    pulled: Mapped[int] = mapped_column(BigInteger)
    conflicts: Mapped[int] = mapped_column(BigInteger)
    # The most recent error answers: [{"status", "code", "route", "count", "last_at"}, ...].
    errors: Mapped[list[Any]] = mapped_column(JSONB)
