"""Partial replication's edges: revocation of a claim-bound value, a filter changed under the
same checkpoint (narrowing, widening, disjoint), and the filters refused with 400 and 403."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote

import asyncpg
import httpx
import orjson
import pytest
import websockets

from tests.conftest import collection_id
from tests.partial import (
    CLAIM_RULE,
    PLAIN_RULE,
    Doc,
    Filter,
    Puller,
    constraints,
    is_placeholder,
    item,
    placeholder_problem,
    pull,
    push,
    register_filtered,
    serve,
    service,
    token,
)
from tests.replica import Replica, stop_all
from tests.support import SyncdProcess


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


async def seed(http: httpx.AsyncClient, collection: str, *docs: Doc) -> None:
    response = await push(http, collection, service("alice"),
                          [{"newDocumentState": d} for d in docs])
    assert response.status_code == 200 and response.json() == [], response.text


async def stream_refusal(url: str) -> int:
    """How a stream is refused: its close code, or 4000 + the handshake's HTTP status."""
    try:
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                message = await asyncio.wait_for(ws.recv(), 10)
                raise AssertionError(f"the stream was served: {message!r}")
    except websockets.InvalidStatus as refused:
        return 4000 + refused.response.status_code
    assert ws.close_code is not None
    return ws.close_code


async def refused_or_served_nothing(http: httpx.AsyncClient, url: str, collection: str,
                                    selector: Filter) -> None:
    """A stream asking for a value outside the caller's claims is refused (4403), or served
    without that value: its RESYNC's pull is the 403, and no document of it is ever sent."""
    try:
        async with websockets.connect(url) as ws:
            first = await asyncio.wait_for(ws.recv(), 10)
            assert first == '"RESYNC"', first
            west = item(f"w-{uuid.uuid4().hex[:6]}", "l1", "west", "pushed west")
            await seed(http, collection, west)
            with contextlib.suppress(TimeoutError):
                message = await asyncio.wait_for(ws.recv(), 1.0)
                raise AssertionError(f"{selector}: the stream sent {message!r}")
    except websockets.InvalidStatus as refused:
        assert refused.response.status_code == 403
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 4403, closed


async def pull_until_refused(http: httpx.AsyncClient, puller: Puller) -> list[Doc]:
    """Puller.pull_all, except that a 403 ends it (after what arrived before it)."""
    got: list[Doc] = []
    while True:
        response = await pull(http, puller.collection, puller.token, puller.filter,
                              puller.checkpoint, puller.page)
        if response.status_code == 403:
            assert response.json()["error"]["code"] == "forbidden_filter_value"
            return got
        assert response.status_code == 200, response.text
        body = response.json()
        got.extend(body["documents"])
        for doc in body["documents"]:
            puller.docs[doc["id"]] = doc
        if body["documents"]:
            puller.checkpoint = body["checkpoint"]
        if len(body["documents"]) < puller.page:
            return got


def ids(docs: list[Doc]) -> set[str]:
    return {d["id"] for d in docs}


# --- revocation -----------------------------------------------------------------------------

# page 2: the removal of the two revoked documents fills the page exactly, so the page after it
# is empty and (as RxDB does) the client keeps the checkpoint of the removal page.
@pytest.mark.parametrize("page", [2, 3])
async def test_a_revoked_region_leaves_the_device_from_its_checkpoint(
    http: httpx.AsyncClient, claimed: str, page: int
) -> None:
    docs = [item("n1", "l1", "north", "n1"), item("n2", "l2", "north", "n2"),
            item("s1", "l1", "south", "s1", secret="south-secret"),
            item("s2", "l2", "south", "s2"), item("w1", "l1", "west", "w1")]
    await seed(http, claimed, *docs)
    both = token("alice", ["north", "south"])
    unfiltered = Puller(claimed, both, None, page=page)
    southern = Puller(claimed, both, {"region": "south"}, page=page)
    by_list = Puller(claimed, both, {"listId": "l1"}, page=page)
    assert ids(await unfiltered.pull_all(http)) == {"n1", "n2", "s1", "s2"}
    assert ids(await southern.pull_all(http)) == {"s1", "s2"}
    assert ids(await by_list.pull_all(http)) == {"n1", "s1"}

    # The token is renewed without "south": each replication continues from its checkpoint.
    north = token("alice", "north")
    for replication in (unfiltered, southern, by_list):
        replication.token = north
    removed = await unfiltered.pull_all(http)
    assert ids(removed) == {"s1", "s2"} and all(map(is_placeholder, removed)), removed
    for doc in removed:
        assert placeholder_problem(doc, constraints(None, ["north", "south"])) is None, doc
    assert set(unfiltered.live()) == {"n1", "n2"}
    # A filter on the revoked value itself: its documents leave (then the replication may be
    # refused as one asking for a value it may not have, or served nothing).
    removed = await pull_until_refused(http, southern)
    assert ids(removed) == {"s1", "s2"} and all(map(is_placeholder, removed)), removed
    assert southern.live() == {}
    removed = await by_list.pull_all(http)
    assert ids(removed) == {"s1"} and all(map(is_placeholder, removed)), removed
    assert set(by_list.live()) == {"n1"}

    # Nothing new of the revoked value is sent afterwards.
    await seed(http, claimed, item("s3", "l1", "south", "s3"), item("n3", "l1", "north", "n3"))
    assert ids(await unfiltered.pull_all(http)) == {"n3"}
    # (Whether the revoked filter is then refused or served empty is the server's choice;
    # it must not deliver anything.)
    response = await pull(http, claimed, north, southern.filter, southern.checkpoint)
    assert response.status_code == 403 or response.json()["documents"] == [], response.text
    assert ids(await by_list.pull_all(http)) == {"n3"}
    # A fresh replication asking for the revoked value: 403.
    response = await pull(http, claimed, north, {"region": "south"})
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden_filter_value"
    response = await pull(http, claimed, north, {"region": {"$in": ["north", "south"]}})
    assert response.status_code == 403, response.text

    # The claim comes back: a widening; the device gets the region's documents again.
    unfiltered.token = both
    back = await unfiltered.pull_all(http)
    assert {"s1", "s2", "s3"} <= ids(back)
    assert set(unfiltered.live()) == {"n1", "n2", "n3", "s1", "s2", "s3"}


# --- filter change --------------------------------------------------------------------------

# page 2: the removal of l2's four documents ends exactly on a page boundary (see above).
@pytest.mark.parametrize("page", [2, 3])
async def test_changing_the_filter_under_the_same_checkpoint(
    http: httpx.AsyncClient, plain: str, page: int
) -> None:
    l1 = [item(f"a{i}", "l1", "north", f"a{i}") for i in range(5)]
    l2 = [item(f"b{i}", "l2", "north", f"b{i}") for i in range(4)]
    l3 = [item(f"c{i}", "l3", "north", f"c{i}") for i in range(3)]
    await seed(http, plain, *l1, *l2, *l3)
    alice = token("alice")
    device = Puller(plain, alice, {"listId": {"$in": ["l1", "l2"]}}, page=page)
    await device.pull_all(http)
    assert set(device.live()) == ids(l1 + l2)

    # Narrowing to l1: l2's documents leave (placeholders, in small pages), nothing else.
    device.filter = {"listId": "l1"}
    got = await device.pull_all(http)
    assert ids(got) == ids(l2) and all(map(is_placeholder, got)), got
    old = constraints({"listId": {"$in": ["l1", "l2"]}}, None)
    assert all(placeholder_problem(d, old) is None for d in got), got
    assert set(device.live()) == ids(l1)
    assert await device.pull_all(http) == []

    # Widening to l1 + l3: l3's documents arrive; l1's stay (perhaps sent again), no deletion.
    device.filter = {"listId": {"$in": ["l1", "l3"]}}
    got = await device.pull_all(http)
    assert ids(l3) <= ids(got) <= ids(l1 + l3) and not any(d["_deleted"] for d in got), got
    assert set(device.live()) == ids(l1 + l3)

    # A document leaves l1 after the checkpoint, then the filter changes to a disjoint one:
    # everything of the old selection leaves, the moved one too; l2 arrives.
    moved = {**l1[0], "listId": "l4", "title": "moved to l4"}
    response = await push(http, plain, alice, [{"newDocumentState": moved,
                                                "assumedMasterState": l1[0]}])
    assert response.json() == [], response.text
    device.filter = {"listId": "l2"}
    got = await device.pull_all(http)
    removed = [d for d in got if d["_deleted"]]
    assert ids(removed) == ids(l1 + l3) and all(map(is_placeholder, removed)), removed
    assert "moved to l4" not in orjson.dumps(got).decode()
    assert device.live() == {d["id"]: d for d in l2}
    assert await device.pull_all(http) == []


async def test_a_filter_change_while_writers_move_documents_loses_nothing(
    http: httpx.AsyncClient, plain: str, database_url: str, db: asyncpg.Connection
) -> None:
    """Documents that move while the removal pages are read are neither lost nor kept."""
    docs = [item(f"m{i:02d}", f"l{1 + i % 3}", "north", f"m{i}") for i in range(30)]
    await seed(http, plain, *docs)
    device = Puller(plain, token("alice"), {"listId": {"$in": ["l1", "l2"]}}, page=3)
    await device.pull_all(http)
    cid = await collection_id(db, plain)
    device.filter = {"listId": {"$in": ["l2", "l3"]}}

    async def mover() -> None:
        for i in range(30):
            await db.execute(
                "UPDATE syncd_documents SET data = data || jsonb_build_object('listId', $3::text,"
                " 'title', 'moved ' || $4::text) WHERE collection_id = $1 AND partition = 'alice'"
                " AND id = $2", cid, f"m{(i * 7) % 30:02d}", f"l{1 + (i * 5) % 4}", str(i))
            await asyncio.sleep(0.005)

    async def reader() -> None:
        for _ in range(20):
            response = await pull(http, plain, device.token, device.filter, device.checkpoint, 3)
            assert response.status_code == 200, response.text
            body = response.json()
            for doc in body["documents"]:
                device.docs[doc["id"]] = doc
            if body["documents"]:
                device.checkpoint = body["checkpoint"]
            await asyncio.sleep(0.005)

    await asyncio.gather(mover(), reader())
    await device.pull_all(http)
    table = {r["id"]: orjson.loads(r["data"]) for r in await db.fetch(
        "SELECT id, data FROM syncd_documents WHERE collection_id = $1", cid)}
    want = {k: v for k, v in table.items() if v["listId"] in ("l2", "l3")}
    assert device.live() == want


# --- refused filters ------------------------------------------------------------------------

BAD_FILTERS: list[str] = [
    '{"title": "x"}',  # not a declared field
    '{"listId": {"$gt": "l1"}}',  # not an operator an index serves
    '{"$or": [{"listId": "l1"}, {"listId": "l2"}]}',
    '{"listId": {"$in": "l1"}}',
    '{"listId": {"$in": [{"a": 1}]}}',
    '{"listId": ["l1"]}',
    '{"listId": null}',
    '{"listId": "l1"',  # not JSON
    '["listId"]',
    '"l1"',
    orjson.dumps({"listId": {"$in": [f"l{i}" for i in range(101)]}}).decode(),
]


@pytest.mark.parametrize("raw", BAD_FILTERS)
async def test_a_filter_outside_what_an_index_serves_is_a_400_naming_what_is_allowed(
    http: httpx.AsyncClient, server: SyncdProcess, plain: str, raw: str
) -> None:
    alice = token("alice")
    headers = {"Authorization": f"Bearer {alice}"}
    responses = [
        await http.get(f"/api/v1/sync/{plain}", params={"filter": raw}, headers=headers),
        await http.post(f"/api/v1/sync/{plain}", params={"filter": raw}, headers=headers,
                        json=[{"newDocumentState": item("z", "l1", "north", "z")}]),
    ]
    for response in responses:
        assert response.status_code == 400, (raw, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_filter", error
        assert "listId" in error["message"] and "region" in error["message"], error
        assert "$in" in error["message"] and "$eq" in error["message"], error
    assert (await pull(http, plain, alice)).json()["documents"] == []  # nothing was written

    url = server.url.replace("http://", "ws://") + (
        f"/api/v1/sync/{plain}/stream?filter={quote(raw, safe='')}&access_token={alice}")
    assert await stream_refusal(url) == 4400


@pytest.fixture()
def bare(database_url: str) -> str:
    return register_filtered(database_url, {"partition_claim": "sub"})


async def test_filters_on_a_collection_without_declared_fields_are_refused(
    http: httpx.AsyncClient, bare: str
) -> None:
    response = await pull(http, bare, token("alice"), {"listId": "l1"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_filter"
    response = await push(http, bare, token("alice"),
                          [{"newDocumentState": item("q", "l1", "north", "q")}], {"listId": "l1"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_filter"


async def test_valid_filter_forms_are_accepted(http: httpx.AsyncClient, plain: str) -> None:
    await seed(http, plain, item("a", "l1", "north", "a"), item("b", "l2", "south", "b"))
    alice = token("alice")
    cases: list[tuple[Filter, set[str]]] = [
        ({"listId": "l1"}, {"a"}),
        ({"listId": {"$eq": "l2"}}, {"b"}),
        ({"listId": {"$in": ["l1", "l2"]}, "region": "south"}, {"b"}),
        ({}, {"a", "b"}),
    ]
    for selector, want in cases:
        response = await pull(http, plain, alice, selector)
        assert response.status_code == 200, (selector, response.text)
        assert ids(response.json()["documents"]) == want, selector


async def test_a_claim_bound_value_outside_the_claim_is_a_403(
    http: httpx.AsyncClient, server: SyncdProcess, claimed: str
) -> None:
    north = token("alice", ["north"])
    for selector in ({"region": "west"}, {"region": {"$in": ["north", "west"]}},
                     {"listId": "l1", "region": {"$eq": "west"}}):
        response = await pull(http, claimed, north, selector)
        assert response.status_code == 403, (selector, response.text)
        assert response.json()["error"]["code"] == "forbidden_filter_value"
        url = server.url.replace("http://", "ws://") + (
            f"/api/v1/sync/{claimed}/stream?filter="
            f"{quote(orjson.dumps(selector).decode(), safe='')}&access_token={north}")
        await refused_or_served_nothing(http, url, claimed, selector)
    # A service key may filter on any value.
    response = await pull(http, claimed, service("alice"), {"region": "west"})
    assert response.status_code == 200, response.text


async def _held_then_moved_twice(http: httpx.AsyncClient, db: asyncpg.Connection,
                                 collection: str, page: int) -> Puller:
    """A device holding l1 and l2; then "a-x" (the smallest id) leaves l1 twice (two move
    records whose old listId is l1, after the device's checkpoint)."""
    held = [item("a-x", "l1", "north", "a-x"), item("c0", "l1", "north", "c0"),
            *(item(f"b{i}", "l2", "north", f"b{i}") for i in range(4)),
            item("e0", "l5", "north", "e0")]
    await seed(http, collection, *held)
    device = Puller(collection, token("alice"), {"listId": {"$in": ["l1", "l2"]}}, page=page)
    await device.pull_all(http)
    cid = await collection_id(db, collection)
    for list_id in ("l3", "l1", "l4"):
        await db.execute(
            "UPDATE syncd_documents SET data = jsonb_set(data, '{listId}', to_jsonb($2::text))"
            " WHERE collection_id = $1 AND partition = 'alice' AND id = 'a-x'", cid, list_id)
    return device


async def test_a_removal_page_is_never_short_while_more_is_to_be_removed(
    http: httpx.AsyncClient, plain: str, db: asyncpg.Connection
) -> None:
    """RxDB ends its pull iteration at the first short page: two move records of one document
    in a removal page must not end the removal early."""
    device = await _held_then_moved_twice(http, db, plain, 2)
    device.filter = {"listId": "l5"}
    got = await device.pull_all(http)  # one iteration, as RxDB runs it
    assert device.live() == {"e0": item("e0", "l5", "north", "e0")}, [
        (d["id"], d["_deleted"]) for d in got]


async def test_a_stream_replica_finishes_the_removal_after_a_double_move_out(
    server: SyncdProcess, http: httpx.AsyncClient, plain: str, db: asyncpg.Connection
) -> None:
    """The consequence with a live stream: the frames' checkpoints (of the new filter) replace
    the removal's, and what the old filter held would stay on the device for good."""
    offline = await _held_then_moved_twice(http, db, plain, 2)
    alice = token("alice")
    replica = Replica([server.url], plain, page=2, filter={"listId": "l5"}, token=alice)
    replica.checkpoint, replica.docs = offline.checkpoint, dict(offline.docs)
    stop = asyncio.Event()
    task = asyncio.create_task(replica.run(stop))
    try:
        await asyncio.wait_for(replica.subscribed.wait(), 10)
        await seed(http, plain, item("e1", "l5", "north", "e1"))
        for _ in range(100):
            if "e1" in replica.docs:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        await stop_all([task], stop)
    live = {k for k, d in replica.docs.items() if not d["_deleted"]}
    assert live == {"e0", "e1"}, sorted(live)


async def test_from_everything_to_a_filter_and_back(http: httpx.AsyncClient, plain: str) -> None:
    """An unfiltered replication that starts sending a filter (same checkpoint) loses what the
    filter does not select; dropping the filter again brings everything back."""
    docs = [item(f"k{i}", f"l{1 + i % 3}", "north", f"k{i}") for i in range(9)]
    await seed(http, plain, *docs)
    device = Puller(plain, token("alice"), None, page=4)
    await device.pull_all(http)
    assert set(device.live()) == ids(docs)
    device.filter = {"listId": "l1"}
    got = await device.pull_all(http)
    l1 = {d["id"] for d in docs if d["listId"] == "l1"}
    assert ids(got) == ids(docs) - l1 and all(map(is_placeholder, got)), got
    assert set(device.live()) == l1
    device.filter = None
    await device.pull_all(http)
    assert device.live() == {d["id"]: d for d in docs}


NUMBERS_RULE = {"partition_claim": "sub", "filters": {"n": {}, "done": {}}}


@pytest.fixture()
def numbered(database_url: str) -> str:
    return register_filtered(database_url, NUMBERS_RULE)


async def test_numbers_and_booleans_as_filter_values(
    http: httpx.AsyncClient, numbered: str, db: asyncpg.Connection
) -> None:
    """1, 1.0 and 1e0 are one JSON number; true is not 1."""
    docs = [item("one", "l1", "north", "one", n=1), item("two", "l1", "north", "two", n=2),
            item("three", "l1", "north", "three", n=3),
            item("undone", "l1", "north", "undone", n=1, done=False)]
    await seed(http, numbered, *docs)
    cid = await collection_id(db, numbered)
    # Written by another service as 2.0: the same number.
    await db.execute("UPDATE syncd_documents SET data = jsonb_set(data, '{n}', '2.0'::jsonb) "
                     "WHERE collection_id = $1 AND id = 'two'", cid)
    alice = token("alice")
    for raw, want in (('{"n": {"$in": [1, 2.0]}, "done": true}', {"one", "two"}),
                      ('{"n": 1e0}', {"one", "undone"}),
                      ('{"done": false}', {"undone"}),
                      ('{"n": true}', set())):
        response = await http.get(f"/api/v1/sync/{numbered}", params={"filter": raw},
                                  headers={"Authorization": f"Bearer {alice}"})
        assert response.status_code == 200, (raw, response.text)
        assert ids(response.json()["documents"]) == want, raw
    device = Puller(numbered, alice, {"n": {"$in": [1, 2]}, "done": True}, page=10)
    await device.pull_all(http)
    one = docs[0]
    response = await push(http, numbered, alice, [
        {"newDocumentState": {**one, "done": False, "title": "undone now"},
         "assumedMasterState": one}])
    assert response.json() == [], response.text
    [gone] = await device.pull_all(http)
    assert gone == {"id": "one", "listId": "", "region": "", "title": "", "n": 1, "done": True,
                    "tags": [], "kind": "a", "_deleted": True}


async def test_a_filter_changed_again_in_the_middle_of_a_removal(
    http: httpx.AsyncClient, plain: str
) -> None:
    l1 = [item(f"a{i}", "l1", "north", f"a{i}") for i in range(3)]
    l2 = [item(f"b{i}", "l2", "north", f"b{i}") for i in range(5)]
    l3 = [item(f"c{i}", "l3", "north", f"c{i}") for i in range(2)]
    await seed(http, plain, *l1, *l2, *l3)
    device = Puller(plain, token("alice"), {"listId": {"$in": ["l1", "l2"]}}, page=2)
    await device.pull_all(http)
    device.filter = {"listId": "l1"}
    response = await pull(http, plain, device.token, device.filter, device.checkpoint, 2)
    first = response.json()
    assert ids(first["documents"]) == {"b0", "b1"}  # the first page of the removal
    for doc in first["documents"]:
        device.docs[doc["id"]] = doc
    device.checkpoint = first["checkpoint"]
    device.filter = {"listId": "l3"}  # changed again before the removal ended
    await device.pull_all(http)
    assert device.live() == {d["id"]: d for d in l3}
    assert all(device.docs[d["id"]]["_deleted"] for d in l1 + l2)
