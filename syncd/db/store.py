"""Documents: the pull page and the push batch, in as few statements as the rules allow.

Hot path on raw asyncpg (prepared statements, no ORM): a pull is one indexed range scan, a push is
one statement (its own transaction, one round trip) when nothing conflicts; when something does,
the conflicting rows are compared-and-set again and read back in a second transaction.
Document JSON is returned as the text PostgreSQL produced, so the web layer can splice it into a
response without decoding and re-encoding it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import orjson

from syncd import metrics
from syncd.checkpoint import ORIGIN, Position
from syncd.conflicts import PushRow
from syncd.db.replicas import REPLICA_FAILURES, ReplicaBusy, ReplicaSet
from syncd.db.urls import asyncpg_dsn
from syncd.exceptions import Unavailable

T = TypeVar("T")

# Rows below the oldest transaction still running are final: every transaction that could still
# commit a smaller (xid, seq) has finished. Rows at or above it wait for the next pull, which is
# what keeps a late-committing writer from being skipped. The horizon and the scan share one
# statement, hence one snapshot.
# Column references are qualified: an unqualified ORDER BY xid would sort by the converted
# output column and give up the index order (a sort of every row after the checkpoint).
PULL_SQL = """
SELECT d.data, d.xid::text::bigint AS xid_number, d.seq
FROM syncd_documents AS d
WHERE d.collection_id = $1 AND d.partition = $2
  AND (d.xid, d.seq) > ($3::bigint::text::xid8, $4::bigint)
  AND d.xid < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY d.xid, d.seq
LIMIT $5
"""

# Compare-and-set for the whole batch in one statement: insert new ids; overwrite a stored row only
# when it equals the row's assumedMasterState (jsonb equality) and differs from the new state.
# Rows it did not write stay locked (ON CONFLICT DO UPDATE locks the row before its WHERE), so the
# follow-up read of the conflicts sees exactly the state that made them conflict. Rows go in id
# order, so two batches touching the same ids lock them in the same order and cannot deadlock.
PUSH_SQL = """
WITH input AS (
    SELECT i.id, i.assumed, i.new
    FROM unnest($3::text[], $4::jsonb[], $5::jsonb[]) AS i(id, assumed, new)
)
INSERT INTO syncd_documents AS d (collection_id, partition, id, data)
SELECT $1, $2, input.id, input.new FROM input ORDER BY input.id COLLATE "C"
ON CONFLICT (collection_id, partition, id) DO UPDATE
    SET data = EXCLUDED.data
    WHERE d.data = (SELECT input.assumed FROM input WHERE input.id = EXCLUDED.id)
      AND d.data <> EXCLUDED.data
RETURNING d.id, d.xid::text::bigint, d.seq
"""

# The stored state of the rows the push did not write. A row whose stored state already equals
# the new state is a retried push that had succeeded: not a conflict.
UNWRITTEN_SQL = """
SELECT d.data
FROM unnest($3::text[], $4::jsonb[]) WITH ORDINALITY AS i(id, new, position)
JOIN syncd_documents AS d
  ON d.collection_id = $1 AND d.partition = $2 AND d.id = i.id
WHERE d.data <> i.new
ORDER BY i.position
"""

# The newest servable position of each (collection, partition) a node streams, in one statement:
# the node's poll for changes written by other nodes or by plain SQL. A backward scan of the
# change index per feed, stopped at its first row below the horizon.
HEADS_SQL = """
SELECT f.position, h.xid::text::bigint, h.seq
FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS f(collection_id, partition, position)
CROSS JOIN LATERAL (
    SELECT d.xid, d.seq
    FROM syncd_documents AS d
    WHERE d.collection_id = f.collection_id AND d.partition = f.partition
      AND d.xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY d.xid DESC, d.seq DESC
    LIMIT 1
) AS h
"""

# Failures of the connection or the server rather than of the statement: the caller may retry.
CONNECTION_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection the server cut while it was in use
    asyncpg.OperatorInterventionError,  # shutdown, cancelled by the statement timeout
    asyncpg.InsufficientResourcesError,
)

# Tombstones older than the retention window, a bounded batch per statement: each batch is its
# own short transaction, so a purge never holds every pull's horizon back for long.
PURGE_SQL = """
WITH doomed AS (
    SELECT d.collection_id, d.partition, d.id
    FROM syncd_documents AS d
    JOIN syncd_collections AS c ON c.id = d.collection_id
    WHERE d.deleted AND d.updated_at < now() - make_interval(secs => $1)
      AND ($2::text IS NULL OR c.name = $2)
    LIMIT $3
)
DELETE FROM syncd_documents AS d
USING doomed
WHERE d.collection_id = doomed.collection_id AND d.partition = doomed.partition
  AND d.id = doomed.id
"""

# Move-out records (docs/partial-sync.md) older than the window, like tombstones: a replication
# offline for longer than the window no longer learns that such a document left its filter.
PURGE_MOVES_SQL = """
WITH doomed AS (
    SELECT m.collection_id, m.partition, m.xid, m.seq
    FROM syncd_moves AS m
    JOIN syncd_collections AS c ON c.id = m.collection_id
    WHERE m.moved_at < now() - make_interval(secs => $1)
      AND ($2::text IS NULL OR c.name = $2)
    LIMIT $3
)
DELETE FROM syncd_moves AS m
USING doomed
WHERE m.collection_id = doomed.collection_id AND m.partition = doomed.partition
  AND m.xid = doomed.xid AND m.seq = doomed.seq
"""

# A push into a collection that was removed (``syncd collections remove``) after this node
# cached it: the documents' foreign key refuses the rows.
CollectionGone = asyncpg.ForeignKeyViolationError

EPOCH_SQL = "SELECT to_hex(system_identifier) FROM pg_control_system()"

# The oldest transaction holding an xid in the cluster, running or prepared: pulls and feeds
# serve only rows below it (docs/ordering.md), so its age is how stale live data can get.
OLDEST_XID_AGE_SQL = """
SELECT COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(started)), 0)::float8
FROM (
    SELECT xact_start AS started FROM pg_stat_activity WHERE backend_xid IS NOT NULL
    UNION ALL
    SELECT prepared FROM pg_prepared_xacts
) AS holders
"""


@dataclass(frozen=True, slots=True)
class PushResult:
    conflicts: list[str]  # stored JSON of every row that conflicted, in push order
    last: Position | None  # the newest position written; None when nothing was


@dataclass(frozen=True, slots=True)
class Page:
    documents: list[str]  # JSON text of each document, as stored
    last: Position | None  # position of the last document; None when the page is empty


class DocumentStore:
    def __init__(
        self, pool: asyncpg.Pool, epoch: str, replicas: ReplicaSet | None = None
    ) -> None:
        self._pool = pool
        self.epoch = epoch  # identifies the cluster whose xids the checkpoints hold
        # Streaming replicas that serve reads (syncd/db/replicas.py); None: the primary does.
        self.replicas = replicas

    @classmethod
    async def open(
        cls, database_url: str, *, min_size: int, max_size: int, statement_timeout_ms: int,
        replica_urls: Sequence[str] = (), replica_max_lag_ms: int = 1000,
        replica_check_ms: int = 250,
    ) -> DocumentStore:
        pool = await asyncpg.create_pool(
            asyncpg_dsn(database_url),
            min_size=min_size,
            max_size=max_size,
            server_settings={
                "statement_timeout": str(statement_timeout_ms),
                # An idle open transaction would freeze every pull's horizon: never allow one.
                "idle_in_transaction_session_timeout": str(statement_timeout_ms),
                "application_name": "syncd",
            },
            # asyncpg's default reset sends a query (advisory unlock, CLOSE ALL, UNLISTEN,
            # RESET ALL) on every release: a round trip per request for session state this
            # pool never creates. An open transaction is still rolled back before this runs.
            reset=_keep_session,
        )
        async with pool.acquire() as conn:
            epoch = await conn.fetchval(EPOCH_SQL)
        metrics.POOL_MAX.set(max_size)
        replicas = None
        if replica_urls:
            replicas = ReplicaSet(
                replica_urls, epoch=str(epoch), max_lag_seconds=replica_max_lag_ms / 1000,
                check_seconds=replica_check_ms / 1000, pool_max=max_size,
                statement_timeout_ms=statement_timeout_ms,
            )
            await replicas.start(pool)
        return cls(pool, str(epoch), replicas)

    async def close(self) -> None:
        if self.replicas is not None:
            await self.replicas.close()
        await self._pool.close()

    async def read(
        self, query: Callable[[asyncpg.Connection], Awaitable[T]], *, primary: bool = False
    ) -> T:
        """Run a read (a pull page, a stream read, a head poll) on a replica in rotation, or on
        the primary: when none is, when asked to (``primary``: a feed woken by this node's own
        commit, which a replica may not have replayed yet), when the replica's pool is busy, and
        at once when the replica fails (docs/ordering.md explains why a replica's pull is as
        gap-free as the primary's)."""
        replicas = self.replicas
        replica = None if replicas is None or primary else replicas.pick()
        if replicas is not None and replica is not None:
            try:
                async with replicas.connection(replica) as conn:
                    result = await query(conn)
            except ReplicaBusy:
                pass  # its connections are all in use: the primary serves this one
            except REPLICA_FAILURES as exc:
                replicas.failed(replica, exc)
            else:
                metrics.REPLICA_READS.labels(replica.label).inc()
                return result
        async with self._connection() as conn:
            result = await query(conn)
        if replicas is not None:
            metrics.REPLICA_READS.labels("primary").inc()
        return result

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    async def oldest_transaction_age(self) -> float:
        """Seconds since the oldest transaction holding back the pull horizon began."""
        async with self._connection() as conn:
            age: float = await conn.fetchval(OLDEST_XID_AGE_SQL)
        return age

    def connection(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """A pooled connection for the statements of other modules (syncd/db/nodes.py), with
        the same translation of connection failures into Unavailable (503)."""
        return self._connection()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; failing to get one means the database is unavailable, whatever
        PostgreSQL's reason (not accepting connections, too many, shutting down ...)."""
        try:
            conn = await self._pool.acquire()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise Unavailable(
                f"cannot connect to PostgreSQL ({type(exc).__name__}); retry shortly",
                code="database_unavailable",
            ) from exc
        metrics.POOL_IN_USE.inc()
        try:
            yield conn
        except CONNECTION_LOST as exc:
            raise Unavailable(
                f"lost the connection to PostgreSQL ({type(exc).__name__}); retry shortly",
                code="database_unavailable",
            ) from exc
        finally:
            metrics.POOL_IN_USE.dec()
            await self._pool.release(conn)

    async def pull(
        self, collection_id: uuid.UUID, partition: str, after: Position, limit: int,
        *, primary: bool = False,
    ) -> Page:
        rows = await self.read(lambda conn: conn.fetch(
            PULL_SQL, collection_id, partition, after.xid, after.seq, limit
        ), primary=primary)
        if not rows:
            return Page([], None)
        last = rows[-1]
        return Page([row[0] for row in rows], Position(last[1], last[2]))

    async def purge_tombstones(
        self, older_than_seconds: float, collection: str | None, *, batch: int = 10_000
    ) -> int:
        """Delete tombstones older than the window; return how many. Clients offline for
        longer than the window never learn of those deletes, so keep it generous."""
        return await self._purge(PURGE_SQL, older_than_seconds, collection, batch)

    async def purge_moves(
        self, older_than_seconds: float, collection: str | None, *, batch: int = 10_000
    ) -> int:
        """Delete move-out records older than the window; return how many."""
        return await self._purge(PURGE_MOVES_SQL, older_than_seconds, collection, batch)

    async def _purge(
        self, sql: str, older_than_seconds: float, collection: str | None, batch: int
    ) -> int:
        total = 0
        while True:
            async with self._connection() as conn:
                status = await conn.execute(sql, older_than_seconds, collection, batch)
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < batch:
                return total

    async def heads(self, feeds: Sequence[tuple[uuid.UUID, str]]) -> list[Position]:
        """The newest servable position of each (collection, partition); ORIGIN when empty."""
        result = [ORIGIN] * len(feeds)
        if not feeds:
            return result
        rows = await self.read(lambda conn: conn.fetch(
            HEADS_SQL, [cid for cid, _ in feeds], [part for _, part in feeds]
        ))
        for position, xid, seq in rows:
            result[position - 1] = Position(xid, seq)
        return result

    async def push(
        self, collection_id: uuid.UUID, partition: str, rows: Sequence[PushRow]
    ) -> PushResult:
        """Write the non-conflicting rows atomically; return the stored JSON of the others and
        where the written rows stand in the change order."""
        ids = [row.id for row in rows]
        # The texts parse_push_rows built; encoded here only when it could not (the encoder's
        # error is raised then).
        new = [row.new_json or _json(row.new) for row in rows]
        assumed = [
            None if row.assumed is None else row.assumed_json or _json(row.assumed)
            for row in rows
        ]
        async with self._connection() as conn:
            # One statement is one transaction: when every row is written (the common case)
            # the push costs one round trip, not BEGIN + statement + COMMIT.
            written = await conn.fetch(PUSH_SQL, collection_id, partition, ids, assumed, new)
            last = _last_position(written)
            if len(written) == len(rows):
                return PushResult([], last)
            done = {record[0] for record in written}
            rest = [i for i, doc_id in enumerate(ids) if doc_id not in done]
            result = await _push_rest(
                conn,
                collection_id,
                partition,
                [ids[i] for i in rest],
                [assumed[i] for i in rest],
                [new[i] for i in rest],
            )
            if last is not None and (result.last is None or result.last < last):
                return PushResult(result.conflicts, last)
            return result


def _last_position(written: Sequence[asyncpg.Record]) -> Position | None:
    """The greatest (xid, seq) among the rows a push statement wrote."""
    if not written:
        return None
    return max(Position(record[1], record[2]) for record in written)


async def _push_rest(
    conn: asyncpg.Connection,
    collection_id: uuid.UUID,
    partition: str,
    ids: list[str],
    assumed: list[str | None],
    new: list[str],
) -> PushResult:
    """The rows the first statement did not write: compare-and-set them again and read the
    stored state of those still unwritten, in one transaction.

    The first statement committed on its own, so the rows it did not write are no longer
    locked. Re-running the compare-and-set locks them (or writes those that stopped
    conflicting meanwhile, e.g. a row deleted in between, as a client's retry would), so the
    read sees exactly the state that made each remaining row conflict."""
    async with conn.transaction():
        written = await conn.fetch(PUSH_SQL, collection_id, partition, ids, assumed, new)
        conflicts = await conn.fetch(UNWRITTEN_SQL, collection_id, partition, ids, new)
    return PushResult([record[0] for record in conflicts], _last_position(written))


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset: nothing to undo (no LISTEN, advisory locks, cursors or SET on this pool)."""


def _json(doc: object) -> str:
    return orjson.dumps(doc).decode()
