"""Pull and push, shared by every way in (native API, rxdb-server protocol, RxDB websocket).

Adapters translate wire formats; the rules of what a pull returns and what a push writes live
here and below.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import orjson

from syncd import checkpoint as checkpoints
from syncd import metrics
from syncd.auth.access import AccessRule
from syncd.auth.identity import Identity, identity_key
from syncd.config import Settings
from syncd.conflicts import parse_push_rows, raise_if_too_deep
from syncd.db.filtered import FilteredReads
from syncd.db.registry import CollectionRegistry
from syncd.db.store import CollectionGone, DocumentStore
from syncd.exceptions import BadRequest, Forbidden, NotFound, UpgradeRequired
from syncd.filters import Filter, effective, forbidden_values, parse_selector
from syncd.hub import Hub
from syncd.partial import PartialPulls, PartialPushes, Scope, read_checkpoint
from syncd.placeholders import Placeholders
from syncd.schema import Validator, compile_validator
from syncd.subscriber import Subscriber


@dataclass(frozen=True, slots=True)
class Collection:
    id: uuid.UUID
    name: str
    primary_key: str
    schema_version: int
    validate: Validator
    access: AccessRule
    loaded_at: float
    placeholders: Placeholders  # the deletions partial replication sends (docs/partial-sync.md)


@dataclass(frozen=True, slots=True)
class PullResult:
    documents: list[str]  # stored JSON text, ready to splice into a response
    checkpoint: dict[str, Any] | None


class SyncService:
    # RxDB clients push at most push.batchSize rows (100 by default); this admits generous
    # batch sizes while keeping one push to one bounded statement.
    MAX_PUSH_ROWS = 10_000

    def __init__(
        self, settings: Settings, store: DocumentStore, registry: CollectionRegistry, hub: Hub
    ) -> None:
        self._settings = settings
        self._store = store
        self._registry = registry
        self._hub = hub
        self._collections: dict[str, Collection] = {}
        reads = FilteredReads(store)
        self._partial_pulls = PartialPulls(reads, store.epoch)
        self._partial_pushes = PartialPushes(reads)

    async def collection(self, name: str) -> Collection:
        cached = self._collections.get(name)
        if cached and time.monotonic() - cached.loaded_at < self._settings.collection_cache_seconds:
            return cached
        # PostgreSQL text cannot hold U+0000, so no collection has such a name; asking the
        # database would fail with an encoding error that reads like an outage (503).
        record = None if "\x00" in name else await self._registry.get(name)
        if record is None:
            raise self._unknown(name)
        if cached and cached.id == record.id and cached.schema_version == record.schema_version:
            fresh = replace(
                cached, access=AccessRule.parse(record.access_rule), loaded_at=time.monotonic()
            )
        else:
            fresh = Collection(
                id=record.id,
                name=record.name,
                primary_key=record.primary_key,
                schema_version=record.schema_version,
                validate=compile_validator(record.schema),
                access=AccessRule.parse(record.access_rule),
                loaded_at=time.monotonic(),
                placeholders=Placeholders(record.schema, record.primary_key),
            )
        self._collections[name] = fresh
        return fresh

    def _unknown(self, name: str) -> NotFound:
        self._collections.pop(name, None)
        return NotFound(
            f"collection {name!r} does not exist; register it with "
            f"`syncd collections add {name} --schema FILE.json`",
            code="unknown_collection",
        )

    @staticmethod
    def check_version(collection: Collection, stated: int | None) -> None:
        """Refuse a client whose RxDB schema is older than the collection's (426): its documents
        have the old shape, and it would store newer ones it cannot read. A client that states
        no version is not checked. Newer than the collection's is served: the schema decides
        what a push may write (and the operator registers the new version)."""
        if stated is not None and stated < collection.schema_version:
            raise UpgradeRequired(
                f"schema version {stated} is outdated: collection {collection.name!r} is at "
                f"version {collection.schema_version}. Update the app to a build whose RxDB "
                "schema has that version (with a migration strategy)",
                code="outdated_schema",
            )

    def check_limit(self, limit: int | None) -> int:
        if limit is None:
            return self._settings.pull_default_limit
        if not 1 <= limit <= self._settings.pull_max_limit:
            raise BadRequest(
                f"limit must be between 1 and {self._settings.pull_max_limit}, got {limit}",
                code="invalid_limit",
            )
        return limit

    async def pull(
        self, name: str, identity: Identity, checkpoint: Any, limit: int | None,
        schema_version: int | None = None, filter_text: str | None = None,
    ) -> PullResult:
        """Up to ``limit`` changes after ``checkpoint``, in change order; never a short page
        while more visible changes exist. Only the caller's partition is ever read, and of it
        only what the replication's effective filter selects (docs/partial-sync.md)."""
        collection = await self.collection(name)
        self.check_version(collection, schema_version)
        partition = collection.access.partition_for(identity, write=False)
        count = self.check_limit(limit)
        declared = collection.access.filters
        requested = parse_selector(filter_text, declared)
        after, state = read_checkpoint(checkpoint, self._store.epoch)
        fresh = state is None and after == checkpoints.ORIGIN
        flt = effective(requested, declared, identity, fresh=fresh)
        if flt is None:
            if state is not None:  # filtered before, everything now: from the beginning
                after, checkpoint = checkpoints.ORIGIN, None
            page = await self._store.pull(collection.id, partition, after, count)
            metrics.DOCUMENTS_PULLED.labels(collection.name).inc(len(page.documents))
            if page.last is None:
                return PullResult([], checkpoint)
            return PullResult(page.documents, checkpoints.encode(page.last, self._store.epoch))
        result = await self._partial_pulls.pull(
            self._scope(collection, partition), flt, after, state, count
        )
        metrics.DOCUMENTS_PULLED.labels(collection.name).inc(len(result.documents))
        return PullResult(result.documents, result.checkpoint)

    @staticmethod
    def _scope(collection: Collection, partition: str) -> Scope:
        return Scope(collection.id, partition, collection.placeholders, collection.access.filters)

    async def push(
        self, name: str, identity: Identity, body: Any, schema_version: int | None = None,
        filter_text: str | None = None,
    ) -> list[str]:
        """Apply a batch of push rows; return the stored state of every row that conflicted.

        Rows live in the caller's partition: ids of other partitions are different rows, so a
        conflict answer can only ever carry the caller's own documents."""
        collection = await self.collection(name)
        self.check_version(collection, schema_version)
        partition = collection.access.partition_for(identity, write=True)
        try:
            rows = parse_push_rows(
                body, collection.primary_key, collection.validate, max_rows=self.MAX_PUSH_ROWS
            )
        except RecursionError:
            raise_if_too_deep(body, collection.primary_key)
            raise
        if not rows:
            return []
        collection.access.check_owner(partition, (row.new for row in rows))
        declared = collection.access.filters
        flt: Filter | None = None
        if declared or filter_text:
            requested = parse_selector(filter_text, declared)
            refused = forbidden_values(declared, identity, [row.new for row in rows])
            if refused is not None:
                raise Forbidden(refused, code="forbidden_filter_value")
            # Values the claims no longer allow are dropped, not refused: the replication's
            # next pull removes them from the device (a 403 would cancel it).
            flt = effective(requested, declared, identity)
            if flt is not None:
                rows = await self._partial_pushes.overriding(
                    self._scope(collection, partition), flt,
                    effective(None, declared, identity), rows,
                )
        try:
            result = await self._store.push(collection.id, partition, rows)
        except CollectionGone:  # removed since this node cached it
            raise self._unknown(name) from None
        except orjson.JSONEncodeError:  # an alias of TypeError: re-raised unless too deep
            raise_if_too_deep(body, collection.primary_key)
            raise
        metrics.DOCUMENTS_PUSHED.labels(collection.name).inc(len(rows))
        if result.conflicts:
            metrics.CONFLICTS.labels(collection.name).inc(len(result.conflicts))
        if result.last is not None:
            self._hub.committed(collection.id, partition, result.last)
            # The caller's own streams on this node carry the echo before the answer goes out
            # (docs/rxdb-compat.md, "Quick edits"): RxDB loses edits when it comes later.
            await self._hub.echoed(
                collection.id, partition, identity_key(identity), result.last,
                self._settings.push_echo_wait_ms / 1000,
            )
        if flt is not None and result.conflicts:
            return self._partial_pushes.hide(
                self._scope(collection, partition), flt, rows, result.conflicts,
                collection.primary_key,
            )
        return result.conflicts

    async def subscribe(
        self, name: str, identity: Identity, schema_version: int | None = None,
        way: str = "other", filter_text: str | None = None,
    ) -> tuple[Collection, Subscriber]:
        """Register a live subscriber; from now on every change of the caller's partition that
        its effective filter selects reaches it (move-outs as deletions), or a RESYNC."""
        collection = await self.collection(name)
        self.check_version(collection, schema_version)
        partition = collection.access.partition_for(identity, write=False)
        declared = collection.access.filters
        requested = parse_selector(filter_text, declared)
        # No checkpoint here: values the claims no longer allow are dropped; the pull that
        # follows the stream's RESYNC removes them from the device (or refuses a fresh one).
        flt = effective(requested, declared, identity)
        route = None if flt is None else self._partial_pulls.router(
            self._scope(collection, partition)
        )
        subscriber = await self._hub.subscribe(
            collection.id, partition, identity_key(identity), way, flt, route
        )
        subscriber.claims = collection.access.claim_names()
        return collection, subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._hub.unsubscribe(subscriber)

