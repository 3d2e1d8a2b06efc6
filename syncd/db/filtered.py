"""The SQL of partial replication: a filtered pull page, the removal after a filter change, and
the stored state of documents a filtered push conflicts on (docs/partial-sync.md).

The statements name the collection id as a literal: the per-collection partial indexes
(syncd/db/filtering.py) can serve only a statement whose WHERE clause implies their predicate,
which a parameter does not do in a generic plan. Texts are built once per (collection, filter
shape) and cached; values travel as ``jsonb[]`` parameters, so one prepared statement serves
every value of that shape.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache

from syncd.checkpoint import Position
from syncd.db.filtering import _field
from syncd.db.store import DocumentStore
from syncd.filters import Filter

NO_FLOOR = 2**62  # a floor above every xid: no move-out record is read (a first page)
DOCUMENT = 0
MOVE_OUT = 1

Shape = tuple[str, ...]  # the constrained fields, sorted; the driving one is passed apart


@dataclass(frozen=True, slots=True)
class Row:
    kind: int  # DOCUMENT (body is the document) or MOVE_OUT (body is the declared old values)
    id: str
    body: str  # JSON text
    position: Position


@dataclass(frozen=True, slots=True)
class FilteredPage:
    rows: list[Row]
    horizon: int  # the snapshot's xmin: every change below it that matches was read


def _match(column: str, fields: Shape, first_param: int) -> str:
    """``column`` (a jsonb document) matches the filter: each field's value among its array."""
    return " AND ".join(
        f"({column} -> '{_field(f)}') = ANY(${first_param + i}::jsonb[])"
        for i, f in enumerate(fields)
    ) or "true"


@lru_cache(maxsize=1024)
def pull_sql(collection_id: uuid.UUID, fields: Shape, driving: str) -> str:
    """Parameters: $1 partition, $2/$3 position, $4 limit, $5 floor, $6 the driving field's
    values, $7… the other fields' values in ``fields`` order (the driving one left out).

    Per value of the driving field, one index range scan of the documents and one of the move
    records, each with the other conditions before its LIMIT; merged in change order."""
    cid = f"'{collection_id}'::uuid"
    others = tuple(f for f in fields if f != driving)
    every = (driving, *others)
    doc_rest = "".join(f"\n          AND {_match('d.data', (f,), 7 + i)}"
                       for i, f in enumerate(others))
    move_rest = "".join(f"\n          AND {_match('m.old', (f,), 7 + i)}"
                        for i, f in enumerate(others))
    current = " AND ".join(
        f"(c.data -> '{_field(f)}') = ANY(${6 + i}::jsonb[])" for i, f in enumerate(every)
    )
    return f"""
WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon)
SELECT h.horizon::text::bigint, p.kind, p.id, p.body, p.xid::text::bigint, p.seq
FROM h LEFT JOIN LATERAL (
    SELECT u.kind, u.id, u.body, u.xid, u.seq FROM (
        SELECT {DOCUMENT} AS kind, x.id, x.data::text AS body, x.xid, x.seq
        FROM unnest($6::jsonb[]) AS v(value) CROSS JOIN LATERAL (
            SELECT d.id, d.data, d.xid, d.seq
            FROM syncd_documents AS d
            WHERE d.collection_id = {cid} AND d.partition = $1
              AND (d.data -> '{_field(driving)}') = v.value
              AND (d.xid, d.seq) > ($2::bigint::text::xid8, $3::bigint)
              AND d.xid < h.horizon{doc_rest}
            ORDER BY d.xid, d.seq
            LIMIT $4
        ) AS x
        UNION ALL
        SELECT {MOVE_OUT}, y.id, y.old::text, y.xid, y.seq
        FROM unnest($6::jsonb[]) AS v(value) CROSS JOIN LATERAL (
            SELECT m.id, m.old, m.xid, m.seq
            FROM syncd_moves AS m
            WHERE m.collection_id = {cid} AND m.partition = $1
              AND (m.old -> '{_field(driving)}') = v.value
              AND (m.xid, m.seq) > ($2::bigint::text::xid8, $3::bigint)
              AND m.xid >= $5::bigint::text::xid8
              AND m.xid < h.horizon{move_rest}
              AND NOT EXISTS (
                  SELECT FROM syncd_documents AS c
                  WHERE c.collection_id = {cid} AND c.partition = $1 AND c.id = m.id
                    AND {current}
              )
            ORDER BY m.xid, m.seq
            LIMIT $4
        ) AS y
    ) AS u
    ORDER BY u.xid, u.seq
    LIMIT $4
) AS p ON true
"""


@lru_cache(maxsize=1024)
def removal_sql(collection_id: uuid.UUID, old: Shape | None, new: Shape) -> str:
    """Parameters: $1 partition, $2 the last id removed, $3 limit, $4/$5 the checkpoint's
    position, $6 its floor, $7… the old filter's values (``old`` order), then the new one's;
    without an old filter (the device held everything), the new one's values from $4.

    What a device may hold under the old filter and the new one does not select, in primary-key
    order: current documents matching old and not new, and documents that moved out of old after
    the checkpoint and match neither now."""
    cid = f"'{collection_id}'::uuid"
    old_fields = old or ()
    # Without an old filter there are no move-outs to read, nor their parameters ($4 to $6).
    first_new = 4 if old is None else 7 + len(old_fields)
    old_doc = _match("d.data", old_fields, 7)
    values = "jsonb_build_object(" + ", ".join(
        f"'{_field(f)}', d.data -> '{f}'" for f in old_fields
    ) + ")"
    moves = "" if old is None else f"""
        UNION ALL
        (SELECT m.id, m.old
         FROM syncd_moves AS m
         WHERE m.collection_id = {cid} AND m.partition = $1 AND m.id > $2
           AND (m.xid, m.seq) > ($4::bigint::text::xid8, $5::bigint)
           AND m.xid >= $6::bigint::text::xid8
           AND {_match('m.old', old_fields, 7)}
           AND NOT EXISTS (
               SELECT FROM syncd_documents AS c
               WHERE c.collection_id = {cid} AND c.partition = $1 AND c.id = m.id
                 AND (({_match('c.data', new, first_new)}) OR ({_match('c.data', old_fields, 7)}))
           )
         ORDER BY m.id
         LIMIT $3)"""
    return f"""
WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon)
SELECT h.horizon::text::bigint, r.id, r.old::text
FROM h LEFT JOIN LATERAL (
    SELECT u.id, u.old FROM (
        (SELECT d.id, {values} AS old
         FROM syncd_documents AS d
         WHERE d.collection_id = {cid} AND d.partition = $1 AND d.id > $2
           AND {old_doc}
           AND ({_match('d.data', new, first_new)}) IS NOT TRUE
         ORDER BY d.id
         LIMIT $3){moves}
    ) AS u
    ORDER BY u.id
    LIMIT $3
) AS r ON true
"""


@lru_cache(maxsize=1024)
def route_sql(fields: Shape) -> str:
    """Every change of a partition after a position, for a node's live filtered feeds, which
    route them in Python (syncd/partial.py): documents with their declared fields, and move-out
    records with the document's current declared fields (NULL when it is gone). Parameters: $1
    collection, $2 partition, $3/$4 position, $5 limit.

    One read per partition whatever the number of filters streamed: the change index of every
    pull, and the move records' primary key, both in change order."""
    def declared(column: str) -> str:
        return "jsonb_build_object(" + ", ".join(
            f"'{_field(f)}', {column} -> '{f}'" for f in fields) + ")::text"

    return f"""
WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon)
SELECT h.horizon::text::bigint, p.kind, p.id, p.body, p.fields, p.current,
       p.xid::text::bigint, p.seq
FROM h LEFT JOIN LATERAL (
    SELECT u.kind, u.id, u.body, u.fields, u.current, u.xid, u.seq FROM (
        (SELECT {DOCUMENT} AS kind, d.id, d.data::text AS body, {declared('d.data')} AS fields,
                NULL::text AS current, d.xid, d.seq
         FROM syncd_documents AS d
         WHERE d.collection_id = $1 AND d.partition = $2
           AND (d.xid, d.seq) > ($3::bigint::text::xid8, $4::bigint) AND d.xid < h.horizon
         ORDER BY d.xid, d.seq
         LIMIT $5)
        UNION ALL
        (SELECT {MOVE_OUT}, m.id, NULL, m.old::text,
                (SELECT {declared('c.data')} FROM syncd_documents AS c
                 WHERE c.collection_id = $1 AND c.partition = $2 AND c.id = m.id),
                m.xid, m.seq
         FROM syncd_moves AS m
         WHERE m.collection_id = $1 AND m.partition = $2
           AND (m.xid, m.seq) > ($3::bigint::text::xid8, $4::bigint) AND m.xid < h.horizon
         ORDER BY m.xid, m.seq
         LIMIT $5)
    ) AS u
    ORDER BY u.xid, u.seq
    LIMIT $5
) AS p ON true
"""


@dataclass(frozen=True, slots=True)
class Change:
    """A change of the partition as a live feed routes it."""

    kind: int  # DOCUMENT or MOVE_OUT
    id: str
    body: str | None  # the document's JSON (DOCUMENT)
    fields: str  # its declared fields (DOCUMENT), or their old values (MOVE_OUT), as JSON
    current: str | None  # MOVE_OUT: the document's declared fields now; None when it is gone
    position: Position


CURRENT_SQL = """
SELECT d.id, d.data::text
FROM syncd_documents AS d
WHERE d.collection_id = $1 AND d.partition = $2 AND d.id = ANY($3::text[])
"""


def driving_field(flt: Filter, bound: Collection[str] = ()) -> str:
    """The field whose values the index range scans follow: one the client chose rather than a
    claim-bound one (``bound``: usually broad, e.g. every region of a user, while a client's
    own filter picks a few lists), then the one with the fewest values (the fewest scans)."""
    return min(flt, key=lambda item: (item[0] in bound, len(item[1]), item[0]))[0]


class FilteredReads:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def pull(
        self, collection_id: uuid.UUID, partition: str, flt: Filter, after: Position,
        floor: int, limit: int, bound: Collection[str] = (),
    ) -> FilteredPage:
        driving = driving_field(flt, bound)
        values = dict(flt)
        fields = tuple(name for name, _ in flt)
        others = [list(values[f]) for f in fields if f != driving]
        sql = pull_sql(collection_id, fields, driving)
        records = await self._store.read(lambda conn: conn.fetch(
            sql, partition, after.xid, after.seq, limit, floor, list(values[driving]), *others,
        ))
        horizon = records[0][0]
        rows = [
            Row(record[1], record[2], record[3], Position(record[4], record[5]))
            for record in records if record[1] is not None
        ]
        return FilteredPage(rows, horizon)

    async def removal(
        self, collection_id: uuid.UUID, partition: str, old: Filter | None, new: Filter,
        after: Position, floor: int, cursor: str, limit: int,
    ) -> tuple[list[tuple[str, str]], int]:
        """(id, old values JSON) of what leaves the device, after ``cursor``; and the horizon."""
        old_shape = None if old is None else tuple(name for name, _ in old)
        new_shape = tuple(name for name, _ in new)
        sql = removal_sql(collection_id, old_shape, new_shape)
        arrays = [list(values) for _, values in (old or ())] + [list(v) for _, v in new]
        moves = () if old is None else (after.xid, after.seq, floor)
        records = await self._store.read(
            lambda conn: conn.fetch(sql, partition, cursor, limit, *moves, *arrays)
        )
        horizon = records[0][0]
        return [(r[1], r[2]) for r in records if r[1] is not None], horizon

    async def changes(
        self, collection_id: uuid.UUID, partition: str, fields: Shape, after: Position,
        limit: int, *, primary: bool = False,
    ) -> tuple[list[Change], int]:
        """The partition's changes after ``after`` (see ``route_sql``), and the horizon."""
        sql = route_sql(fields)
        records = await self._store.read(lambda conn: conn.fetch(
            sql, collection_id, partition, after.xid, after.seq, limit,
        ), primary=primary)
        changes = [
            Change(r[1], r[2], r[3], r[4], r[5], Position(r[6], r[7]))
            for r in records if r[1] is not None
        ]
        return changes, records[0][0]

    async def current(
        self, collection_id: uuid.UUID, partition: str, ids: Sequence[str]
    ) -> dict[str, str]:
        """The stored JSON of these documents (those that exist)."""
        async with self._store.connection() as conn:
            records = await conn.fetch(CURRENT_SQL, collection_id, partition, list(ids))
        return {record[0]: record[1] for record in records}
