"""The admin page's statements: node heartbeats (``syncd_nodes``) and the cluster overview.

Each node upserts its own row every heartbeat and deletes it when it stops. A node killed
without stopping leaves a row that simply stops being refreshed: readers skip rows older than
three of that node's own intervals, and the next heartbeat of any node deletes rows long dead.
Every time is PostgreSQL's ``now()``, so the nodes' own clocks never matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from syncd.db.store import OLDEST_XID_AGE_SQL, DocumentStore

# Rows of nodes dead for this many of their intervals (at least a minute) are deleted.
FORGET_AFTER_HEARTBEATS = 20
# A node missing this many heartbeats is shown no more.
SHOWN_FOR_HEARTBEATS = 3

HEARTBEAT_SQL = f"""
WITH forgotten AS (
    DELETE FROM syncd_nodes AS old
    WHERE old.node_id <> $1
      AND old.last_seen < now() - make_interval(
          secs => greatest(old.heartbeat_seconds * {FORGET_AFTER_HEARTBEATS}, 60))
)
INSERT INTO syncd_nodes AS n (
    node_id, hostname, host, port, pid, version, started_at, last_seen, heartbeat_seconds,
    subscribers, pushed, pulled, conflicts, errors)
VALUES ($1, $2, $3, $4, $5, $6, now(), now(), $7, $8::jsonb, $9, $10, $11, $12::jsonb)
ON CONFLICT (node_id) DO UPDATE SET
    last_seen = now(), heartbeat_seconds = EXCLUDED.heartbeat_seconds,
    subscribers = EXCLUDED.subscribers, pushed = EXCLUDED.pushed, pulled = EXCLUDED.pulled,
    conflicts = EXCLUDED.conflicts, errors = EXCLUDED.errors
"""

FORGET_SQL = "DELETE FROM syncd_nodes WHERE node_id = $1"

LIVE_NODES_SQL = f"""
SELECT n.node_id, n.hostname, n.host, n.port, n.pid, n.version, n.started_at, n.last_seen,
       n.heartbeat_seconds, n.subscribers::text AS subscribers, n.pushed, n.pulled,
       n.conflicts, n.errors::text AS errors,
       EXTRACT(EPOCH FROM now() - n.last_seen)::float8 AS seen_seconds_ago
FROM syncd_nodes AS n
WHERE n.last_seen > now() - make_interval(secs => n.heartbeat_seconds * {SHOWN_FOR_HEARTBEATS})
ORDER BY n.started_at, n.node_id
"""

# Every collection with its counts in one aggregate (one pass over the documents, which costs
# in proportion to the table: syncd/admin/overview.py caches the answer for a few seconds).
COLLECTIONS_SQL = """
SELECT c.name, c.primary_key, c.schema_version,
       count(d.id) FILTER (WHERE NOT d.deleted) AS documents,
       count(d.id) FILTER (WHERE d.deleted) AS tombstones
FROM syncd_collections AS c
LEFT JOIN syncd_documents AS d ON d.collection_id = c.id
GROUP BY c.id, c.name, c.primary_key, c.schema_version
ORDER BY c.name
"""


@dataclass(frozen=True, slots=True)
class Beat:
    """What a node publishes about itself."""

    node_id: str
    hostname: str
    host: str
    port: int
    pid: int
    version: str
    heartbeat_seconds: float
    subscribers: dict[str, int]
    pushed: int
    pulled: int
    conflicts: int
    errors: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Cluster:
    """The nodes alive now and the horizon's age, as read in one go."""

    nodes: list[dict[str, Any]]
    oldest_transaction_age: float


# A heartbeat is a write, so its xid holds every pull's horizon (docs/ordering.md) until its
# commit is done; with synchronous_commit on that includes the WAL flush, which under load takes
# tens of milliseconds, every few seconds, on every node. Losing a heartbeat in a crash costs
# nothing, so it commits without waiting for the flush (as the NOTIFY connection does).
NO_FLUSH_WAIT_SQL = "SET LOCAL synchronous_commit TO off"


async def beat(store: DocumentStore, beat: Beat) -> None:
    async with store.connection() as conn, conn.transaction():
        await conn.execute(NO_FLUSH_WAIT_SQL)
        await conn.execute(
            HEARTBEAT_SQL, beat.node_id, beat.hostname, beat.host, beat.port, beat.pid,
            beat.version, beat.heartbeat_seconds, orjson.dumps(beat.subscribers).decode(),
            beat.pushed, beat.pulled, beat.conflicts, orjson.dumps(beat.errors).decode(),
        )


async def forget(store: DocumentStore, node_id: str) -> None:
    async with store.connection() as conn, conn.transaction():
        await conn.execute(NO_FLUSH_WAIT_SQL)
        await conn.execute(FORGET_SQL, node_id)


async def cluster(store: DocumentStore) -> Cluster:
    async with store.connection() as conn:
        rows = await conn.fetch(LIVE_NODES_SQL)
        oldest: float = await conn.fetchval(OLDEST_XID_AGE_SQL)
    return Cluster([_node(row) for row in rows], oldest)


async def collections(store: DocumentStore) -> list[dict[str, Any]]:
    async with store.connection() as conn:
        rows = await conn.fetch(COLLECTIONS_SQL)
    return [
        {"name": row["name"], "primary_key": row["primary_key"],
         "schema_version": row["schema_version"], "documents": row["documents"],
         "tombstones": row["tombstones"]}
        for row in rows
    ]


def _node(row: Any) -> dict[str, Any]:
    return {
        "id": row["node_id"], "hostname": row["hostname"], "host": row["host"],
        "port": row["port"], "pid": row["pid"], "version": row["version"],
        "started_at": _iso(row["started_at"]), "last_seen": _iso(row["last_seen"]),
        "seen_seconds_ago": round(max(row["seen_seconds_ago"], 0.0), 3),
        "heartbeat_seconds": row["heartbeat_seconds"],
        "subscribers": orjson.loads(row["subscribers"]),
        "pushed": row["pushed"], "pulled": row["pulled"], "conflicts": row["conflicts"],
        "errors": orjson.loads(row["errors"]),
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat()
