"""Filtered pulls and pushes: the rules of partial replication on top of the store's SQL
(docs/partial-sync.md). Used by the service for every way in.

A filtered pull is one of three things, decided by the checkpoint's filter state and the
request's effective filter: a fresh start (no move-outs before its first page concern it), the
continuation of the same filter, or a filter change (removal of what the old filter held, by
primary key, then the new filter's pull).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from syncd import checkpoint as checkpoints
from syncd.checkpoint import ORIGIN, Position
from syncd.conflicts import PushRow
from syncd.db.filtered import (
    DOCUMENT,
    MOVE_OUT,
    NO_FLOOR,
    Change,
    FilteredReads,
    Row,
    driving_field,
)
from syncd.exceptions import Forbidden
from syncd.filters import (
    Filter,
    FilterField,
    FilterState,
    decode_state,
    encode_state,
    matches,
    within,
)
from syncd.hub import RoutedRead, RouteReader
from syncd.placeholders import Placeholders


@dataclass(frozen=True, slots=True)
class Scope:
    """What one filtered request is about."""

    collection_id: uuid.UUID
    partition: str
    placeholders: Placeholders
    declared: Mapping[str, FilterField]

    @property
    def bound(self) -> frozenset[str]:
        """The claim-bound fields."""
        return frozenset(name for name, f in self.declared.items() if f.claim is not None)


@dataclass(frozen=True, slots=True)
class Page:
    documents: list[str]
    checkpoint: dict[str, Any] | None


_R = TypeVar("_R", Row, tuple[str, str])

# A feed position that stands for "every change with an xid below ``horizon`` was read".
MAX_SEQ = 2**63 - 1


def read_checkpoint(checkpoint: Any, epoch: str) -> tuple[Position, FilterState | None]:
    position, token = checkpoints.decode_with_state(checkpoint, epoch)
    return position, None if token is None else decode_state(token)


class PartialPulls:
    def __init__(self, reads: FilteredReads, epoch: str) -> None:
        self._reads = reads
        self._epoch = epoch

    def checkpoint(self, position: Position, state: FilterState) -> dict[str, Any]:
        return checkpoints.encode(position, self._epoch, encode_state(state))

    async def pull(
        self, scope: Scope, flt: Filter, position: Position, state: FilterState | None,
        limit: int,
    ) -> Page:
        """A page for a filtered replication (``flt`` is its effective filter)."""
        if state is None and position == ORIGIN:
            return await self.pull_filter(scope, flt, ORIGIN, None, limit)
        if state is None:  # it replicated everything so far: remove what the filter drops
            return await self._change(scope, None, position, 0, flt, None, "", limit)
        if state.removal is not None:
            floor_after, cursor = state.removal
            if state.target != flt:  # changed again mid-way: what was kept must be re-judged
                cursor = ""
            return await self._change(
                scope, state.filter, position, state.floor, flt, floor_after, cursor, limit
            )
        if state.filter == flt:
            return await self.pull_filter(scope, flt, position, state.floor, limit)
        return await self._change(scope, state.filter, position, state.floor, flt, None, "", limit)

    async def pull_filter(
        self, scope: Scope, flt: Filter, after: Position, floor: int | None, limit: int,
        removed: Mapping[str, str] | None = None,
    ) -> Page:
        """The changes of ``flt`` after ``after``; ``floor`` None for a replication starting from
        nothing (its first page reads no move-outs and records the floor)."""
        # Several move-outs of one document are sent once, yet a page with more to follow must
        # hold ``limit`` documents (RxDB ends its iteration at a short page): read more rows
        # until it does, and end the page before the document that would exceed it.
        texts: dict[str, str] = dict(removed or {})  # a filter change's deletions come first
        want = limit
        while True:
            page = await self._reads.pull(
                scope.collection_id, scope.partition, flt, after,
                NO_FLOOR if floor is None else floor, want, scope.bound,
            )
            fresh = len({row.id for row in page.rows} - texts.keys())
            if len(page.rows) < want or fresh >= limit:
                break
            want += limit - fresh
        rows = _first_distinct(page.rows, limit, texts.keys())
        if floor is None:
            floor = page.horizon
        fields = tuple(name for name, _ in flt)
        for row in rows:
            texts.pop(row.id, None)  # several versions of one document: send the last
            if row.kind == DOCUMENT:
                texts[row.id] = row.body
            else:
                old = orjson.loads(row.body)
                values = {name: old[name] for name in fields if old.get(name) is not None}
                texts[row.id] = orjson.dumps(
                    scope.placeholders.deletion(row.id, values)
                ).decode()
        last = rows[-1].position if rows else after
        kept_floor = floor if last.xid < floor else 0  # below the position it says nothing
        return Page(
            list(texts.values()), self.checkpoint(last, FilterState(flt, kept_floor))
        )

    def router(self, scope: Scope) -> RouteReader:
        """What a node's live filtered feeds of one partition read with (syncd/hub.py): the
        partition's changes once, routed in Python to every filter they concern — by the same
        rules as a filtered pull of a running replication (a document that matches now; a
        move-out whose old values matched and whose current version does not)."""
        fields = tuple(sorted(scope.declared))
        routes = _Routes(scope.bound)

        async def read(
            after: Position, limit: int, filters: Sequence[Filter], primary: bool
        ) -> RoutedRead:
            changes, horizon = await self._reads.changes(
                scope.collection_id, scope.partition, fields, after, limit, primary=primary
            )
            full = len(changes) >= limit
            last = changes[-1].position if changes else after
            # A page that is not full read every change below the horizon.
            read_to = last if full else max(last, Position(horizon - 1, MAX_SEQ))
            found = self._route(scope, routes.of(filters), changes)
            return RoutedRead(read_to, full, {
                flt: (list(texts.values()), self.checkpoint(position, FilterState(flt)))
                for flt, (texts, position) in found.items()
            })

        return read

    @staticmethod
    def _route(
        scope: Scope, routes: Mapping[str, Mapping[str, list[Filter]]], changes: list[Change]
    ) -> dict[Filter, tuple[dict[str, str], Position]]:
        """Per filter, the documents to send (last version per id) and the last position."""
        found: dict[Filter, tuple[dict[str, str], Position]] = {}
        for change in changes:
            values = orjson.loads(change.fields)
            candidates = {
                flt for name, by_value in routes.items()
                for flt in by_value.get(_value_text(values.get(name)) or "", ())
            }
            if not candidates:
                continue
            current = None
            if change.kind == MOVE_OUT and change.current is not None:
                current = orjson.loads(change.current)
            for flt in candidates:
                if not matches(flt, values):
                    continue
                if change.kind == DOCUMENT:
                    assert change.body is not None
                    text = change.body
                elif current is not None and matches(flt, current):
                    continue  # it left and came back: its current version is sent instead
                else:
                    kept = {name: values[name] for name, _ in flt
                            if values.get(name) is not None}
                    text = orjson.dumps(scope.placeholders.deletion(change.id, kept)).decode()
                texts = found.setdefault(flt, ({}, change.position))[0]
                texts.pop(change.id, None)
                texts[change.id] = text
                found[flt] = (texts, change.position)
        return found

    async def _change(
        self, scope: Scope, old: Filter | None, position: Position, floor: int, new: Filter,
        floor_after: int | None, cursor: str, limit: int,
    ) -> Page:
        """One page of a filter change: deletions of what ``old`` held and ``new`` does not
        select (by primary key), then, once there are none left, ``new``'s own pull."""
        # One row more than the page: a page that removes the last of it is not followed by
        # an empty one (RxDB keeps the checkpoint of a non-empty page only). Several move
        # records of one document are one deletion: read on until the page is full of them.
        want = limit + 1
        while True:
            rows, horizon = await self._reads.removal(
                scope.collection_id, scope.partition, old, new, position, floor, cursor, want
            )
            distinct = len({doc_id for doc_id, _ in rows})
            if len(rows) < want or distinct > limit:
                break
            want += limit + 1 - distinct
        first = _first_distinct(rows, limit)
        more, rows = len(first) < len(rows), first
        if floor_after is None:
            floor_after = horizon  # move-outs from here on are the new filter's business
        fields = tuple(name for name, _ in old or ())
        deletions: dict[str, str] = {}
        for doc_id, old_json in rows:
            values = orjson.loads(old_json)
            kept = {name: values[name] for name in fields if values.get(name) is not None}
            deletions[doc_id] = orjson.dumps(scope.placeholders.deletion(doc_id, kept)).decode()
        if more:
            state = FilterState(old, floor, new, (floor_after, rows[-1][0]))
            return Page(list(deletions.values()), self.checkpoint(position, state))
        if within(new, old):  # a narrowing (a revocation): the device holds the rest already
            start, start_floor = position, floor
        else:
            start, start_floor = ORIGIN, floor_after
        return await self.pull_filter(
            scope, new, start, start_floor, limit - len(deletions), deletions
        )


class _Routes:
    """Which filters a change may concern, by the value of each filter's driving field: a
    change is matched only against the filters one of its values leads to."""

    def __init__(self, bound: frozenset[str]) -> None:
        self._bound = bound
        self._cached: tuple[tuple[Filter, ...], dict[str, dict[str, list[Filter]]]] = ((), {})

    def of(self, filters: Sequence[Filter]) -> dict[str, dict[str, list[Filter]]]:
        """Driving field -> its value (JSON text) -> the filters it leads to."""
        key = tuple(filters)
        if self._cached[0] != key:
            routes: dict[str, dict[str, list[Filter]]] = {}
            for flt in filters:
                name = driving_field(flt, self._bound)
                for text in dict(flt)[name]:
                    routes.setdefault(name, {}).setdefault(text, []).append(flt)
            self._cached = (key, routes)
        return self._cached[1]


def _value_text(value: Any) -> str | None:
    """A declared field's value as the filters hold it (JSON text), None if it cannot match."""
    if value is None or not isinstance(value, (str, int, float)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return orjson.dumps(value).decode()


class PartialPushes:
    """The two rules of a push through a filtered replication (docs/partial-sync.md)."""

    def __init__(self, reads: FilteredReads) -> None:
        self._reads = reads

    async def overriding(
        self, scope: Scope, flt: Filter, claims: Filter | None, rows: list[PushRow]
    ) -> list[PushRow]:
        """Rows whose ``assumedMasterState`` is the placeholder syncd answered a conflict with:
        the device overrides the deletion it was shown. Compare-and-set them against the stored
        version, if the caller may write it (its claims allow the stored document)."""
        fields = tuple(name for name, _ in flt)
        chosen = [i for i, row in enumerate(rows)
                  if scope.placeholders.is_placeholder(row.assumed, fields)]
        if not chosen:
            return rows
        stored = await self._reads.current(
            scope.collection_id, scope.partition, [rows[i].id for i in chosen]
        )
        result = list(rows)
        for i in chosen:
            text = stored.get(rows[i].id)
            if text is None:
                continue
            doc = orjson.loads(text)
            if matches(flt, doc):
                continue  # visible: it conflicts and the device sees the stored state
            if not matches(claims, doc):
                raise Forbidden(
                    f"document {rows[i].id!r} is outside what the caller's claims allow; it "
                    "cannot be written (nothing of this push was written)",
                    code="forbidden_filter_value",
                )
            result[i] = dataclasses.replace(rows[i], assumed=doc, assumed_json=text)
        return result

    @staticmethod
    def hide(
        scope: Scope, flt: Filter, rows: list[PushRow], conflicts: list[str], primary_key: str
    ) -> list[str]:
        """Conflicts on documents the filter cannot see are answered with their placeholder
        deletion, carrying the values the device itself pushed, never the stored content."""
        fields = tuple(name for name, _ in flt)
        pushed = {row.id: row.new for row in rows}
        answer = []
        for text in conflicts:
            doc = orjson.loads(text)
            if matches(flt, doc):
                answer.append(text)
                continue
            doc_id = str(doc.get(primary_key))
            new = pushed.get(doc_id, {})
            values = {name: new[name] for name in fields if new.get(name) is not None}
            answer.append(orjson.dumps(scope.placeholders.deletion(doc_id, values)).decode())
        return answer


def _first_distinct(rows: Sequence[_R], count: int, taken: Collection[str] = ()) -> list[_R]:
    """The rows before the one that brings a ``count + 1``-th document (not in ``taken``)."""
    seen: set[str] = set()
    for i, row in enumerate(rows):
        doc_id = row[0] if isinstance(row, tuple) else row.id
        if doc_id not in seen and doc_id not in taken:
            if len(seen) == count:
                return list(rows[:i])
            seen.add(doc_id)
    return list(rows)
