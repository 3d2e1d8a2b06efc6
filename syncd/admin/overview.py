"""``GET /admin/api/overview``: the cluster as the admin page shows it, in one JSON object."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from syncd.db import nodes
from syncd.db.store import DocumentStore

# Counting every collection's documents reads the whole documents table, so a node asks at
# most this often, however many pages poll it (each polls every 2 s).
COLLECTION_COUNTS_SECONDS = 5.0


class Overview:
    def __init__(self, store: DocumentStore, *, node_id: str, lag_warning_seconds: float) -> None:
        self._store = store
        self._node_id = node_id
        self._lag_warning = lag_warning_seconds
        self._collections: list[dict[str, Any]] = []
        self._counted_at = -COLLECTION_COUNTS_SECONDS
        self._counting = asyncio.Lock()

    async def read(self) -> dict[str, Any]:
        cluster = await nodes.cluster(self._store)
        collections = await self._collection_counts()
        lag = cluster.oldest_transaction_age
        return {
            "generated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "node": self._node_id,
            "nodes": cluster.nodes,
            "lag": {
                "oldest_transaction_age_seconds": round(lag, 3),
                "warning_seconds": self._lag_warning,
                "warning": lag > self._lag_warning,
            },
            "collections": collections,
            "errors": merged_errors(cluster.nodes),
        }

    async def _collection_counts(self) -> list[dict[str, Any]]:
        async with self._counting:  # concurrent pages share one count
            if time.monotonic() - self._counted_at >= COLLECTION_COUNTS_SECONDS:
                self._collections = await nodes.collections(self._store)
                self._counted_at = time.monotonic()
        return self._collections


def merged_errors(node_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every node's recent errors summed by (status, code, route), most recent first."""
    merged: dict[tuple[int, str, str], dict[str, Any]] = {}
    for node in node_rows:
        for error in node["errors"]:
            key = (error["status"], error["code"], error["route"])
            entry = merged.setdefault(key, {
                "status": key[0], "code": key[1], "route": key[2], "count": 0,
                "last_at": error["last_at"], "nodes": [],
            })
            entry["count"] += error["count"]
            entry["last_at"] = max(entry["last_at"], error["last_at"])
            entry["nodes"].append(node["id"])
    return sorted(merged.values(), key=lambda e: e["last_at"], reverse=True)
