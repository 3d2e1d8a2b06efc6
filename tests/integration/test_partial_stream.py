"""Partial replication on live streams: move-in and move-out frames, one feed per filter fanned out
to its subscribers, and no subscriber ever sent a document outside its filter."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator

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
    Filter,
    add_collection,
    constraints,
    is_placeholder,
    item,
    matches,
    placeholder_problem,
    push,
    rows,
    serve,
    service,
    token,
)
from tests.replica import Replica, stop_all
from tests.support import SyncdProcess


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[SyncdProcess]:
    yield from serve(database_url)


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def write(http: httpx.AsyncClient, collection: str, new: Doc,
                assumed: Doc | None = None) -> None:
    row: Doc = {"newDocumentState": new}
    if assumed is not None:
        row["assumedMasterState"] = assumed
    response = await push(http, collection, service("alice"), [row])
    assert response.status_code == 200 and response.json() == [], response.text


async def test_stream_frames_carry_move_ins_and_move_outs_and_nothing_else(
    server: SyncdProcess, database_url: str, db: asyncpg.Connection
) -> None:
    collection = await add_collection(database_url, PLAIN_RULE)
    stop = asyncio.Event()
    replica = Replica([server.url], collection, filter={"listId": "l1"}, token=token("alice"))
    task = asyncio.create_task(replica.run(stop))
    try:
        await asyncio.wait_for(replica.subscribed.wait(), 10)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            a, b = item("a", "l1", "north", "a1"), item("b", "l2", "north", "b1")
            await write(http, collection, a)
            await write(http, collection, b)
            await until(lambda: "a" in replica.docs)
            c = item("c", "l1", "north", "c1")
            await db.execute(
                "INSERT INTO syncd_documents (collection_id, partition, id, data) "
                "VALUES ($1, 'alice', 'c', $2)",
                await collection_id(db, collection), orjson.dumps(c).decode())
            await until(lambda: "c" in replica.docs)  # move-in by a plain-SQL insert
            b2 = {**b, "listId": "l1", "title": "b2"}
            await write(http, collection, b2, b)
            await until(lambda: "b" in replica.docs)  # move-in by an update
            a2 = {**a, "listId": "l3", "title": "a2", "secret": "x"}
            await write(http, collection, a2, a)
            await until(lambda: replica.docs["a"].get("_deleted") is True)  # move-out
        assert replica.docs == {"a": {**NEUTRAL, "id": "a", "listId": "l1", "_deleted": True},
                                "b": b2, "c": c}
        assert replica.frames >= 4 and replica.resyncs == 1
        assert all(d["title"] != "b1" and d["title"] != "a2" for d in replica.received)
    finally:
        await stop_all([task], stop)


@pytest.mark.parametrize("rule", ["plain", "claims"])
async def test_many_subscribers_per_filter_each_receive_exactly_their_selection(
    server: SyncdProcess, database_url: str, db: asyncpg.Connection, rule: str
) -> None:
    claims = ["north", "south"] if rule == "claims" else None
    collection = await add_collection(database_url, CLAIM_RULE if claims else PLAIN_RULE)
    filters: list[Filter | None] = [
        {"listId": "l1"}, {"listId": {"$in": ["l2", "l3"]}, "region": "north"}, None]
    counts = [12, 6, 4]
    stop = asyncio.Event()
    replicas = [
        (selector, Replica([server.url], collection, page=4, filter=selector,
                           token=token("alice", claims)))
        for selector, count in zip(filters, counts, strict=True) for _ in range(count)
    ]
    tasks = [asyncio.create_task(r.run(stop)) for _, r in replicas]
    try:
        await asyncio.wait_for(asyncio.gather(*(r.subscribed.wait() for _, r in replicas)), 30)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            before = (await http.get("/metrics")).text
            rng = random.Random(3)
            known: dict[str, Doc] = {}
            deadline = time.monotonic() + 4.0
            k = 0
            while time.monotonic() < deadline:
                k += 1
                doc_id = f"d{rng.randrange(25)}"
                new = item(doc_id, rng.choice(["l1", "l2", "l3", "l4"]),
                           rng.choice(["north", "south", "west"]), f"v{k}", n=k,
                           secret=f"secret-{k}")
                await write(http, collection, new, known.get(doc_id))
                known[doc_id] = new
            assert k > 50, k
            after = (await http.get("/metrics")).text
        table = await rows(db, collection, "alice")

        def exact() -> bool:
            for selector, replica in replicas:
                effective = constraints(selector, claims)
                want = {i: d for i, d in table.items() if matches(d, effective)}
                live = {i: d for i, d in replica.docs.items() if not d.get("_deleted")}
                if live != want:
                    return False
            return True

        await until(exact, 20)
    finally:
        await stop_all(tasks, stop)
    for selector, replica in replicas:
        effective = constraints(selector, claims)
        assert replica.connects == 1 and replica.resyncs == 1
        for doc in replica.received:
            if is_placeholder(doc):
                assert placeholder_problem(doc, effective) is None, (selector, doc)
            else:
                assert matches(doc, effective), (selector, "outside the filter", doc)
        if selector is not None or claims is not None:
            assert any(map(is_placeholder, replica.received)), selector
    # Subscribers of one filter share one feed: they were sent the same frames.
    for selector in filters:
        sequences = {orjson.dumps([docs for _, docs in r.arrivals])
                     for s, r in replicas if s == selector}
        assert len(sequences) == 1, (selector, len(sequences))
    # ... and the node says so: one feed per effective filter (this module's server serves no
    # other streams now), and database reads per change for each feed, not for each subscriber.
    filtered_feeds = 3 if claims else 2  # with claims, the unfiltered one is filtered too
    assert metric(before, 'syncd_stream_feeds{filtered="yes"}') == filtered_feeds, before
    assert metric(before, 'syncd_stream_feeds{filtered="no"}') == 3 - filtered_feeds, before
    reads = metric(after, "syncd_stream_feed_reads_total") - metric(
        before, "syncd_stream_feed_reads_total")
    print(f"\n{rule}: {k} pushes, {reads:.0f} feed reads for {len(replicas)} subscribers")
    assert reads <= 3 * 3 * k, (reads, k)  # per subscriber, it would be 22 per change


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


async def test_a_revocation_reaches_a_stream_on_its_next_connect(
    server: SyncdProcess, database_url: str
) -> None:
    collection = await add_collection(database_url, CLAIM_RULE)
    stop = asyncio.Event()
    replica = Replica([server.url], collection, page=2, token=token("alice", ["north", "south"]))
    task = asyncio.create_task(replica.run(stop))
    try:
        await asyncio.wait_for(replica.subscribed.wait(), 10)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            docs = [item(f"n{i}", "l1", "north", f"n{i}") for i in range(3)] + [
                item(f"s{i}", "l1", "south", f"s{i}", secret="south") for i in range(3)]
            for doc in docs:
                await write(http, collection, doc)
            await until(lambda: len(replica.docs) == 6)
            # The token is renewed without "south"; the stream reconnects with it.
            replica.token = token("alice", ["north"])
            await replica.drop()
            await until(lambda: replica.connects == 2 and replica.resyncs == 2)
            await until(lambda: all(replica.docs[f"s{i}"]["_deleted"] for i in range(3)))
            # Nothing of south arrives afterwards; north still does.
            await write(http, collection, item("s9", "l1", "south", "s9"))
            await write(http, collection, item("n9", "l1", "north", "n9"))
            await until(lambda: "n9" in replica.docs)
        assert "s9" not in replica.docs
        effective = constraints(None, ["north", "south"])
        for i in range(3):
            assert placeholder_problem(replica.docs[f"s{i}"], effective) is None
        assert {k for k, d in replica.docs.items() if not d["_deleted"]} == {
            "n0", "n1", "n2", "n9"}
    finally:
        await stop_all([task], stop)


async def test_a_filtered_stream_does_not_hold_up_its_callers_pushes(
    server: SyncdProcess, database_url: str
) -> None:
    """The caller's own stream sees nothing of these pushes (another list): its feed still
    advances, so no push waits out SYNCD_PUSH_ECHO_WAIT_MS (500 ms) and no RESYNC is sent."""
    collection = await add_collection(database_url, PLAIN_RULE)
    alice = token("alice")
    stop = asyncio.Event()
    replica = Replica([server.url], collection, filter={"listId": "l1"}, token=alice)
    task = asyncio.create_task(replica.run(stop))
    try:
        await asyncio.wait_for(replica.subscribed.wait(), 10)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            durations = []
            for i in range(20):
                started = time.monotonic()
                response = await push(http, collection, alice, [
                    {"newDocumentState": item(f"o{i}", "l2", "north", f"o{i}")}])
                durations.append(time.monotonic() - started)
                assert response.json() == [], response.text
            # A push into the filter is echoed on the stream before it is answered.
            response = await push(http, collection, alice, [
                {"newDocumentState": item("in", "l1", "north", "in")}])
            assert response.json() == []
            await until(lambda: "in" in replica.docs, 2)
        assert max(durations) < 0.4, durations
        assert replica.resyncs == 1 and replica.connects == 1
        assert set(replica.docs) == {"in"}
    finally:
        await stop_all([task], stop)
