"""Push: atomic per batch, compare-and-set per row, conflicts by jsonb equality (§5.2)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from syncd.checkpoint import ORIGIN
from syncd.conflicts import PushRow
from syncd.db.store import DocumentStore
from tests.conftest import collection_id
from tests.support import SyncdProcess

Doc = dict[str, Any]


def doc(doc_id: str, **fields: Any) -> Doc:
    return {"id": doc_id, "title": "t", "_deleted": False, **fields}


def push(http: httpx.Client, collection: str, *rows: Doc) -> list[Doc]:
    response = http.post(f"/api/v1/sync/{collection}", json=list(rows))
    assert response.status_code == 200, response.text
    result: list[Doc] = response.json()
    return result


def row(new: Doc, assumed: Doc | None = None, *, absent: bool = False) -> Doc:
    if absent:
        return {"newDocumentState": new}
    return {"assumedMasterState": assumed, "newDocumentState": new}


async def stored(db: asyncpg.Connection, collection: str) -> dict[str, Doc]:
    cid = await collection_id(db, collection)
    rows = await db.fetch("SELECT id, data FROM syncd_documents WHERE collection_id = $1", cid)
    return {r["id"]: orjson.loads(r["data"]) for r in rows}


async def version(db: asyncpg.Connection, collection: str, doc_id: str) -> tuple[int, int]:
    cid = await collection_id(db, collection)
    record = await db.fetchrow(
        "SELECT xid::text::bigint, seq FROM syncd_documents WHERE collection_id = $1 AND id = $2",
        cid, doc_id,
    )
    assert record is not None
    return record[0], record[1]


async def test_racing_pushes_with_the_same_assumed_state_exactly_one_wins(
    syncd: SyncdProcess, collection: str, db: asyncpg.Connection
) -> None:
    base = doc("race", n=0)
    async with httpx.AsyncClient(base_url=syncd.url, timeout=30) as client:
        await client.post(f"/api/v1/sync/{collection}", json=[row(base, absent=True)])
        for attempt in range(1, 21):
            current = (await stored(db, collection))["race"]
            mine, theirs = doc("race", n=attempt * 10 + 1), doc("race", n=attempt * 10 + 2)
            answers = await asyncio.gather(
                client.post(f"/api/v1/sync/{collection}", json=[row(mine, current)]),
                client.post(f"/api/v1/sync/{collection}", json=[row(theirs, current)]),
            )
            results = [a.json() for a in answers]
            winners = [r for r in results if r == []]
            assert len(winners) == 1, results
            final = (await stored(db, collection))["race"]
            loser = next(r for r in results if r)
            # The loser is told the state that beat it, which is what is stored.
            assert loser == [final]
            assert final in (mine, theirs)


async def test_conflicting_rows_are_not_written_and_the_others_are(
    http: httpx.Client, collection: str, db: asyncpg.Connection
) -> None:
    push(http, collection, row(doc("a", n=1), absent=True), row(doc("b", n=1), absent=True))
    conflicts = push(
        http, collection,
        row(doc("a", n=2), doc("a", n=1)),  # matches: written
        row(doc("b", n=2), doc("b", n=99)),  # stale: conflict
        row(doc("c", n=1), absent=True),  # new: written
    )
    assert conflicts == [doc("b", n=1)]
    assert await stored(db, collection) == {
        "a": doc("a", n=2), "b": doc("b", n=1), "c": doc("c", n=1),
    }


@pytest.mark.parametrize(
    ("stored_state", "assumed", "conflict"),
    [
        # key order is ignored
        ({"id": "x", "title": "t", "n": 1, "_deleted": False},
         {"_deleted": False, "n": 1, "title": "t", "id": "x"}, False),
        # numbers compare by value: 1 == 1.0
        (doc("x", n=1), doc("x", n=1.0), False),
        # type-strict: true is not 1, "1" is not 1, null is not absent
        (doc("x", done=True), doc("x", done=1), True),
        (doc("x", n=1), doc("x", n="1"), True),
        (doc("x", payload=None), doc("x"), True),
        # nested values, arrays keep their order
        (doc("x", payload={"a": [1, 2], "b": {"c": "d"}}),
         doc("x", payload={"b": {"c": "d"}, "a": [1, 2]}), False),
        (doc("x", payload=[1, 2]), doc("x", payload=[2, 1]), True),
        # a missing _deleted in the assumed state means false
        (doc("x"), {"id": "x", "title": "t"}, False),
        (doc("x", _deleted=True), {"id": "x", "title": "t"}, True),
    ],
)
def test_conflicts_use_jsonb_equality(
    http: httpx.Client, collection: str, stored_state: Doc, assumed: Doc, conflict: bool
) -> None:
    push(http, collection, row(stored_state, absent=True))
    new = doc("x", title="changed")
    answer = push(http, collection, row(new, assumed))
    if conflict:
        assert answer == [{**stored_state, "_deleted": stored_state.get("_deleted", False)}]
    else:
        assert answer == []


def test_absent_and_null_assumed_state_both_insert(http: httpx.Client, collection: str) -> None:
    assert push(http, collection, row(doc("absent"), absent=True)) == []
    assert push(http, collection, row(doc("null"), None)) == []
    pulled = http.get(f"/api/v1/sync/{collection}").json()["documents"]
    assert sorted(d["id"] for d in pulled) == ["absent", "null"]


def test_a_tombstone_plus_absent_assumed_state_is_a_conflict(
    http: httpx.Client, collection: str
) -> None:
    push(http, collection, row(doc("t"), absent=True))
    push(http, collection, row(doc("t", _deleted=True), doc("t")))
    # A client that never saw the delete tries to (re)insert the id: it must learn of the delete.
    assert push(http, collection, row(doc("t", title="again"), absent=True)) == [
        doc("t", _deleted=True)
    ]
    assert push(http, collection, row(doc("t", title="again"), None)) == [doc("t", _deleted=True)]


async def test_a_retried_push_that_already_succeeded_is_a_success_without_a_new_version(
    http: httpx.Client, collection: str, db: asyncpg.Connection
) -> None:
    push(http, collection, row(doc("r", n=1), absent=True))
    update = row(doc("r", n=2), doc("r", n=1))
    assert push(http, collection, update) == []
    before = await version(db, collection, "r")
    assert push(http, collection, update) == []  # the answer to the first was "lost"
    assert await version(db, collection, "r") == before


async def test_documents_are_stored_as_pushed_with_an_explicit_deleted_flag(
    http: httpx.Client, collection: str, db: asyncpg.Connection
) -> None:
    exotic = {
        "id": "e", "title": "ünïcödé ✓ \"quoted\" \\ back", "n": 2**53 - 1,
        "payload": {"float": 1.5e300, "neg": -0.25, "nested": [[], {}, None, True, "x"]},
    }
    push(http, collection, row(exotic, absent=True))
    expected = {**exotic, "_deleted": False}
    assert (await stored(db, collection))["e"] == expected
    # jsonb keeps numbers as exact decimals and prints 1.5e300 in full; every JSON parser
    # reads the same double from it (orjson does, as JavaScript's JSON.parse does).
    pulled = orjson.loads(http.get(f"/api/v1/sync/{collection}").content)["documents"]
    assert pulled == [expected]
    deleted = await db.fetchval(
        "SELECT deleted FROM syncd_documents WHERE id = 'e' AND collection_id = $1",
        await collection_id(db, collection),
    )
    assert deleted is False


async def test_a_batch_is_all_or_nothing_when_the_database_rejects_one_row(
    store: DocumentStore, collection: str, db: asyncpg.Connection
) -> None:
    cid = await collection_id(db, collection)
    good = PushRow("good", None, doc("good"))
    # Past the web layer's validation, the trigger refuses a non-boolean _deleted.
    bad = PushRow("zzz-bad", None, {"id": "zzz-bad", "title": "t", "_deleted": "yes"})
    with pytest.raises(asyncpg.CheckViolationError):
        await store.push(cid, "", [good, bad])
    assert await stored(db, collection) == {}


async def test_an_acknowledged_push_survives_a_crash_right_after_the_answer(
    database_url: str, collection: str, db: asyncpg.Connection
) -> None:
    server = SyncdProcess(database_url)
    try:
        rows = [row(doc(f"d{i}", n=i), absent=True) for i in range(50)]
        answer = httpx.post(f"{server.url}/api/v1/sync/{collection}", json=rows, timeout=30)
        server.kill()
    finally:
        server.stop()
    assert answer.json() == []
    assert len(await stored(db, collection)) == 50


async def test_rows_written_with_plain_sql_are_served_like_pushed_ones(
    http: httpx.Client, collection: str, db: asyncpg.Connection
) -> None:
    cid = await collection_id(db, collection)
    await db.execute(
        "INSERT INTO syncd_documents (collection_id, id, data) "
        "VALUES ($1, 'from-sql', '{\"id\": \"from-sql\", \"title\": \"api\"}')",
        cid,
    )
    assert http.get(f"/api/v1/sync/{collection}").json()["documents"] == [
        {"id": "from-sql", "title": "api", "_deleted": False}
    ]
    # Soft-deleting through the column marks the document deleted for clients too.
    await db.execute(
        "UPDATE syncd_documents SET deleted = true WHERE collection_id = $1 AND id = 'from-sql'",
        cid,
    )
    page = http.get(f"/api/v1/sync/{collection}").json()["documents"]
    assert page == [{"id": "from-sql", "title": "api", "_deleted": True}]
    # And a client that pushes against that state is not told it conflicts.
    assert push(http, collection, row(doc("from-sql", title="api2"), page[0])) == []


async def test_the_rows_a_push_writes_despite_conflicts_share_one_transaction(
    http: httpx.Client, collection: str, db: asyncpg.Connection
) -> None:
    push(http, collection, row(doc("k", n=1), absent=True), row(doc("m", n=1), absent=True))
    conflicts = push(
        http, collection,
        row(doc("k", n=2), doc("k", n=1)),  # written
        row(doc("l", n=1), absent=True),  # written
        row(doc("m", n=2), doc("m", n=99)),  # conflict
        row(doc("m2", n=1), absent=True),  # written
    )
    assert conflicts == [doc("m", n=1)]
    xids = {(await version(db, collection, doc_id))[0] for doc_id in ("k", "l", "m2")}
    assert len(xids) == 1
    assert await version(db, collection, "m") < await version(db, collection, "k")


async def test_a_conflict_answer_lists_the_rows_in_batch_order(
    http: httpx.Client, collection: str
) -> None:
    ids = ["d", "b", "e", "a", "c"]
    push(http, collection, *(row(doc(i, n=1), absent=True) for i in ids))
    conflicts = push(http, collection, *(row(doc(i, n=3), doc(i, n=2)) for i in ids))
    assert conflicts == [doc(i, n=1) for i in ids]


async def test_a_failed_push_leaves_its_pooled_connection_clean(
    database_url: str, collection: str, db: asyncpg.Connection
) -> None:
    # One connection, released without asyncpg's reset query: a failed statement or an
    # aborted conflict transaction must not leave anything behind for the next request.
    store = await DocumentStore.open(database_url, min_size=1, max_size=1,
                                     statement_timeout_ms=30_000)
    try:
        cid = await collection_id(db, collection)
        bad = PushRow("bad", None, {"id": "bad", "title": "t", "_deleted": "yes"})
        for _ in range(2):
            with pytest.raises(asyncpg.CheckViolationError):
                await store.push(cid, "", [PushRow("ok", None, doc("ok")), bad])
        assert (await store.push(cid, "", [PushRow("ok", None, doc("ok"))])).conflicts == []
        stale = PushRow("ok", doc("ok", n=5), doc("ok", n=6))
        stale_result = await store.push(cid, "", [stale])
        assert [orjson.loads(d) for d in stale_result.conflicts] == [doc("ok")]
        assert stale_result.last is None
        page = await store.pull(cid, "", ORIGIN, 10)
        assert [orjson.loads(d) for d in page.documents] == [doc("ok")]
    finally:
        await store.close()
