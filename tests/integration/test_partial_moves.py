"""Partial replication by pull: move-in, move-out as placeholder deletions, out and back, the floor,
and pushes through a filter (docs/partial-sync.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import collection_id
from tests.partial import (
    CLAIM_RULE,
    NEUTRAL,
    PLAIN_RULE,
    Doc,
    Puller,
    constraints,
    item,
    placeholder_problem,
    pull,
    push,
    register_filtered,
    rows,
    serve,
    service,
    token,
)
from tests.replica import Replica, stop_all
from tests.support import SyncdProcess

L1 = {"listId": "l1"}


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[SyncdProcess]:
    yield from serve(database_url)


@pytest.fixture()
async def http(server: SyncdProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture()
def plain(database_url: str) -> str:
    return register_filtered(database_url, PLAIN_RULE)


@pytest.fixture()
def claimed(database_url: str) -> str:
    return register_filtered(database_url, CLAIM_RULE)


# Made when the module is collected, long before some tests run in a full suite (a 10-minute
# token expired mid-run in CI): valid for the whole session.
ALICE = token("alice", ttl=6 * 3600)


async def put(http: httpx.AsyncClient, collection: str, *docs: Doc,
              assumed: list[Doc | None] | None = None,
              tok: str | dict[str, str] = ALICE) -> None:
    """Push new states (compare-and-set against ``assumed``); they must all be written."""
    body: list[Doc] = []
    for i, doc in enumerate(docs):
        row: Doc = {"newDocumentState": doc}
        if assumed is not None and assumed[i] is not None:
            row["assumedMasterState"] = assumed[i]
        body.append(row)
    response = await push(http, collection, tok, body)
    assert response.status_code == 200 and response.json() == [], response.text


def placeholder(doc_id: str, **constrained: Any) -> Doc:
    """The exact deletion the design sends: pk, constrained fields' old values, neutral values
    for the other required properties, ``_deleted``."""
    return {**NEUTRAL, "id": doc_id, **constrained, "_deleted": True}


async def test_move_in_by_insert_and_by_update_and_move_out_as_a_placeholder(
    http: httpx.AsyncClient, plain: str, db: asyncpg.Connection
) -> None:
    reader = Puller(plain, ALICE, L1, page=10)
    a = item("a", "l1", "north", "a1", secret="a-secret")
    b = item("b", "l2", "north", "b1", secret="b-secret")
    await put(http, plain, a, b)
    assert await reader.pull_all(http) == [a]

    # Move-in by a plain-SQL insert, and by an update of the filtered field.
    c = item("c", "l1", "south", "c1")
    await db.execute(
        "INSERT INTO syncd_documents (collection_id, partition, id, data) VALUES ($1, $2, $3, $4)",
        await collection_id(db, plain), "alice", "c", orjson.dumps(c).decode())
    assert await reader.pull_all(http) == [c]
    b2 = {**b, "listId": "l1", "title": "b2"}
    await put(http, plain, b2, assumed=[b])
    assert await reader.pull_all(http) == [b2]

    # Move-out: a placeholder with the old listId, nothing of the new version, no secret.
    a2 = {**a, "listId": "l2", "title": "a2 (now in l2)"}
    await put(http, plain, a2, assumed=[a])
    assert await reader.pull_all(http) == [placeholder("a", listId="l1")]
    assert reader.live() == {"b": b2, "c": c}

    # Changes of documents that neither matched nor match are not sent at all.
    await put(http, plain, {**a2, "title": "a3"}, assumed=[a2])
    assert await reader.pull_all(http) == []
    # ... and a plain-SQL move-out is one too.
    await db.execute(
        "UPDATE syncd_documents SET data = jsonb_set(data, '{listId}', '\"l3\"') "
        "WHERE collection_id = $1 AND partition = 'alice' AND id = 'c'",
        await collection_id(db, plain))
    assert await reader.pull_all(http) == [placeholder("c", listId="l1")]
    assert reader.live() == {"b": b2}
    # Another service removes the field altogether: a move-out as well.
    await db.execute(
        "UPDATE syncd_documents SET data = data - 'listId' "
        "WHERE collection_id = $1 AND partition = 'alice' AND id = 'b'",
        await collection_id(db, plain))
    assert await reader.pull_all(http) == [placeholder("b", listId="l1")]
    assert reader.live() == {}


async def test_a_placeholder_shows_the_values_the_filter_selected_for_every_constrained_field(
    http: httpx.AsyncClient, plain: str
) -> None:
    selector = {"listId": {"$in": ["l1", "l2"]}, "region": {"$eq": "north"}}
    reader = Puller(plain, ALICE, selector, page=10)
    a = item("a", "l2", "north", "a1")
    await put(http, plain, a)
    assert await reader.pull_all(http) == [a]
    await put(http, plain, {**a, "region": "south", "title": "a2"}, assumed=[a])
    assert await reader.pull_all(http) == [placeholder("a", listId="l2", region="north")]


async def test_a_document_that_left_and_came_back_is_sent_once_as_its_current_version(
    http: httpx.AsyncClient, plain: str, db: asyncpg.Connection
) -> None:
    reader = Puller(plain, ALICE, L1, page=10)
    d = item("d", "l1", "north", "d1")
    e = item("e", "l1", "north", "e1")
    await put(http, plain, d, e)
    await reader.pull_all(http)

    d2 = {**d, "listId": "l2", "title": "d2"}
    d3 = {**d2, "listId": "l1", "title": "d3"}
    await put(http, plain, d2, assumed=[d])
    await put(http, plain, d3, assumed=[d2])
    # e leaves three times (l1 -> l2 -> l1 -> l3) in one transaction: one deletion.
    cid = await collection_id(db, plain)
    async with db.transaction():
        for list_id in ("l2", "l1", "l3"):
            await db.execute(
                "UPDATE syncd_documents SET data = jsonb_set(data, '{listId}', to_jsonb($2::text))"
                " WHERE collection_id = $1 AND partition = 'alice' AND id = 'e'", cid, list_id)
    got = await reader.pull_all(http)
    assert sorted(got, key=lambda x: x["id"]) == [d3, placeholder("e", listId="l1")]
    assert reader.live() == {"d": d3}


async def test_a_fresh_replication_never_gets_deletions_of_documents_it_never_had(
    http: httpx.AsyncClient, plain: str
) -> None:
    docs = [item(f"f{i:02d}", "l1", "north", f"f{i}") for i in range(12)]
    await put(http, plain, *docs)
    # Half of them leave l1 before the replication starts, some twice.
    moved = [{**d, "listId": "l2", "title": d["title"] + "'"} for d in docs[::2]]
    await put(http, plain, *moved, assumed=list(docs[::2]))
    back = [{**m, "listId": "l4", "title": m["title"] + "'"} for m in moved[:3]]
    await put(http, plain, *back, assumed=list(moved[:3]))

    for page in (1, 3, 50):
        fresh = Puller(plain, ALICE, L1, page=page)
        got = await fresh.pull_all(http)
        assert got == docs[1::2], page  # in change order, no deletion among them
        assert await fresh.pull_all(http) == []

    # A fresh replication of an empty selection: nothing at all, and still nothing later.
    nothing = Puller(plain, ALICE, {"listId": "l9"}, page=5)
    assert await nothing.pull_all(http) == []
    assert nothing.checkpoint is None


async def test_a_conflict_on_a_document_the_filter_cannot_see_answers_a_placeholder(
    http: httpx.AsyncClient, plain: str, db: asyncpg.Connection
) -> None:
    old = item("x", "l1", "north", "x1")
    await put(http, plain, old)
    reader = Puller(plain, ALICE, L1, page=10)
    await reader.pull_all(http)
    stored = {**old, "listId": "l3", "title": "moved by someone else", "secret": "s3cret"}
    await put(http, plain, stored, assumed=[old])
    # The device has not pulled yet: it edits its copy and pushes through its filter.
    mine = {**old, "title": "my edit"}
    response = await push(http, plain, ALICE, [{"newDocumentState": mine,
                                                "assumedMasterState": old}], L1)
    assert response.status_code == 200, response.text
    [conflict] = response.json()
    assert conflict["_deleted"] is True and conflict["id"] == "x"
    problem = placeholder_problem(conflict, constraints(L1, None), pushed=mine)
    assert problem is None, (problem, conflict)
    assert "l3" not in orjson.dumps(conflict).decode()
    assert (await rows(db, plain, "alice"))["x"] == stored  # nothing written

    # A handler that keeps its version pushes again against the placeholder: written, no loop.
    again = await push(http, plain, ALICE, [{"newDocumentState": mine,
                                             "assumedMasterState": conflict}], L1)
    assert again.status_code == 200 and again.json() == [], again.text
    assert (await rows(db, plain, "alice"))["x"] == mine
    assert await reader.pull_all(http) == [mine]  # the move-out and the move-back: current only

    # A conflict on a document the filter sees answers its stored state, as always.
    newer = {**mine, "title": "newer"}
    await put(http, plain, newer, assumed=[mine])
    stale = await push(http, plain, ALICE, [{"newDocumentState": {**mine, "title": "late"},
                                             "assumedMasterState": mine}], L1)
    assert stale.json() == [newer]


async def test_pushes_are_bound_by_the_claim_of_a_claim_bound_field(
    http: httpx.AsyncClient, claimed: str, db: asyncpg.Connection
) -> None:
    north = token("alice", ["north"])
    inside = item("in", "l1", "north", "inside")
    await put(http, claimed, inside, tok=north)
    # One row outside the claim: 403 and nothing of the batch written.
    response = await push(http, claimed, north, [
        {"newDocumentState": item("ok", "l1", "north", "ok")},
        {"newDocumentState": item("out", "l1", "west", "out")},
    ])
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden_filter_value"
    assert set(await rows(db, claimed, "alice")) == {"in"}
    # Moving a document of one's own out of one's claims is refused too.
    response = await push(http, claimed, north, [
        {"newDocumentState": {**inside, "region": "west"}, "assumedMasterState": inside}])
    assert response.status_code == 403, response.text
    # No regions claim at all: nothing may be written or read.
    nobody = token("alice")
    response = await push(http, claimed, nobody, [
        {"newDocumentState": item("none", "l1", "north", "none")}])
    assert response.status_code == 403, response.text
    got = await pull(http, claimed, nobody)
    assert got.status_code == 200 and got.json()["documents"] == [], got.text
    # A service key is not bound by claims.
    response = await push(http, claimed, service("alice"), [
        {"newDocumentState": item("w", "l1", "west", "by the API")}])
    assert response.status_code == 200 and response.json() == [], response.text
    assert set(await rows(db, claimed, "alice")) == {"in", "w"}


async def test_a_conflict_outside_the_claims_is_a_placeholder_and_overriding_it_is_refused(
    http: httpx.AsyncClient, claimed: str, db: asyncpg.Connection
) -> None:
    north = token("alice", ["north"])
    mine = item("y", "l1", "north", "y1")
    await put(http, claimed, mine, tok=north)
    west = {**mine, "region": "west", "title": "moved west by the API", "secret": "api"}
    await put(http, claimed, west, assumed=[mine], tok=service("alice"))

    edit = {**mine, "title": "my edit"}
    response = await push(http, claimed, north, [{"newDocumentState": edit,
                                                  "assumedMasterState": mine}])
    assert response.status_code == 200, response.text
    [conflict] = response.json()
    problem = placeholder_problem(conflict, constraints(None, ["north"]), pushed=edit)
    assert problem is None, (problem, conflict)
    assert "west" not in orjson.dumps(conflict).decode()
    # Overriding the deletion of a document outside one's claims: refused, nothing written.
    again = await push(http, claimed, north, [{"newDocumentState": edit,
                                               "assumedMasterState": conflict}])
    assert again.status_code == 403, again.text
    assert (await rows(db, claimed, "alice"))["y"] == west


async def _move_twice_then_add(http: httpx.AsyncClient, db: asyncpg.Connection,
                               collection: str, doc: Doc, added: list[Doc]) -> None:
    """``doc`` leaves l1 twice (l1 -> l2 -> l1 -> l3: two move records whose old listId is l1),
    then ``added`` arrive in l1."""
    cid = await collection_id(db, collection)
    for list_id in ("l2", "l1", "l3"):
        await db.execute(
            "UPDATE syncd_documents SET data = jsonb_set(data, '{listId}', to_jsonb($2::text))"
            " WHERE collection_id = $1 AND partition = 'alice' AND id = $3",
            cid, list_id, doc["id"])
    await put(http, collection, *added)


async def test_a_page_is_never_short_while_more_changes_follow(
    http: httpx.AsyncClient, plain: str, db: asyncpg.Connection
) -> None:
    """RxDB stops its pull iteration at the first page shorter than its batch size. A page whose
    rows include two move-outs of one document, sent once, must not end it early."""
    x = item("x", "l1", "north", "x1")
    reader = Puller(plain, ALICE, L1, page=3)
    await put(http, plain, x)
    await reader.pull_all(http)
    added = [item(f"y{i}", "l1", "north", f"y{i}") for i in range(5)]
    await _move_twice_then_add(http, db, plain, x, added)
    got = await reader.pull_all(http)  # one iteration, as RxDB runs it
    assert {d["id"] for d in got} == {"x", *(d["id"] for d in added)}, [
        (d["id"], d["_deleted"]) for d in got]


async def test_a_stream_replica_loses_nothing_after_a_document_moved_out_twice(
    server: SyncdProcess, http: httpx.AsyncClient, plain: str, db: asyncpg.Connection
) -> None:
    """The consequence with a live stream: the RESYNC's pull iteration ends at the short page,
    the stream carries only what comes after it subscribed, and the rest would never arrive."""
    x = item("x", "l1", "north", "x1")
    await put(http, plain, x)
    offline = Puller(plain, ALICE, L1, page=3)
    await offline.pull_all(http)
    added = [item(f"y{i}", "l1", "north", f"y{i}") for i in range(5)]
    await _move_twice_then_add(http, db, plain, x, added)

    replica = Replica([server.url], plain, page=3, filter=L1, token=ALICE)
    replica.checkpoint, replica.docs = offline.checkpoint, dict(offline.docs)
    stop = asyncio.Event()
    task = asyncio.create_task(replica.run(stop))
    try:
        await asyncio.wait_for(replica.subscribed.wait(), 10)
        later = item("z", "l1", "north", "z")  # the stream carries this one
        await put(http, plain, later)
        for _ in range(100):
            if "z" in replica.docs:
                break
            await asyncio.sleep(0.05)
    finally:
        await stop_all([task], stop)
    live = {k for k, d in replica.docs.items() if not d["_deleted"]}
    assert live == {"z", *(d["id"] for d in added)}, sorted(live)
