"""Live streams: subscribe-then-RESYNC, gap-free frames from every writer, on every node."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets

from syncd.db.urls import asyncpg_dsn
from tests.conftest import collection_id
from tests.replica import Replica, stop_all
from tests.support import PostgresServer, SyncdProcess

Doc = dict[str, Any]

SQL_UPSERT = """
INSERT INTO syncd_documents AS d (collection_id, id, data)
VALUES ($1, $2, jsonb_build_object('id', $2::text, 'title', 'sql', 'n', 1))
ON CONFLICT (collection_id, partition, id) DO UPDATE
SET data = jsonb_set(d.data, '{n}', to_jsonb((d.data ->> 'n')::int + 1))
"""


def ws_url(base: str, collection: str) -> str:
    return base.replace("http://", "ws://") + f"/api/v1/sync/{collection}/stream"


async def table(db: asyncpg.Connection, collection: str) -> dict[str, Doc]:
    cid = await collection_id(db, collection)
    rows = await db.fetch("SELECT id, data FROM syncd_documents WHERE collection_id = $1", cid)
    return {r["id"]: orjson.loads(r["data"]) for r in rows}


async def next_frame(ws: websockets.ClientConnection, within: float = 10) -> Doc:
    message = await asyncio.wait_for(ws.recv(), within)
    assert message != '"RESYNC"'
    frame: Doc = orjson.loads(message)
    return frame


async def test_resync_first_then_frames_from_pushes_and_from_plain_sql(
    syncd: SyncdProcess, collection: str, db: asyncpg.Connection
) -> None:
    async with websockets.connect(ws_url(syncd.url, collection)) as ws, \
            httpx.AsyncClient(base_url=syncd.url) as http:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
        pushed = {"id": "p", "title": "pushed", "_deleted": False}
        await http.post(f"/api/v1/sync/{collection}", json=[{"newDocumentState": pushed}])
        frame = await next_frame(ws)
        assert frame["documents"] == [pushed]
        assert set(frame["checkpoint"]) == {"id", "lwt"}

        await db.execute(SQL_UPSERT, await collection_id(db, collection), "from-sql")
        frame2 = await next_frame(ws)
        assert [d["id"] for d in frame2["documents"]] == ["from-sql"]
        # A frame's checkpoint is a pull checkpoint: pulling from it finds nothing older.
        tail = await http.get(f"/api/v1/sync/{collection}",
                              params={"checkpoint": orjson.dumps(frame2["checkpoint"]).decode()})
        assert tail.json()["documents"] == []


async def test_token_sources_and_subprotocol(syncd: SyncdProcess, collection: str) -> None:
    async with websockets.connect(ws_url(syncd.url, collection),
                                  subprotocols=["syncd.v1", "bearer.t0k3n"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "syncd.v1"  # the token is never echoed back
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
    async with websockets.connect(ws_url(syncd.url, collection) + "?access_token=t0k3n") as ws:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'


async def test_unknown_collection_closes_with_a_client_error_code(syncd: SyncdProcess) -> None:
    async with websockets.connect(ws_url(syncd.url, "no_such_collection")) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4404
    assert ws.close_reason and "syncd collections add" in ws.close_reason


async def _pushers(base_urls: list[str], collection: str, ids: list[str], seconds: float,
                   seed: int) -> int:
    """Compare-and-set pushers bumping ``n`` per version, spread over the given nodes."""
    rng = random.Random(seed)
    known: dict[str, Doc | None] = dict.fromkeys(ids)
    deadline, writes = time.monotonic() + seconds, 0
    async with httpx.AsyncClient(timeout=30) as http:
        while time.monotonic() < deadline:
            doc_id = rng.choice(ids)
            assumed = known[doc_id]
            n = 1 if assumed is None else assumed["n"] + 1
            new = {"id": doc_id, "title": "http", "n": n, "_deleted": False}
            row: Doc = {"newDocumentState": new}
            if assumed is not None:
                row["assumedMasterState"] = assumed
            url = rng.choice(base_urls) + f"/api/v1/sync/{collection}"
            try:
                response = await http.post(url, json=[row])
            except httpx.TransportError:
                continue  # a node died mid-request; try another one
            if response.status_code != 200:
                continue
            conflicts = response.json()
            known[doc_id] = conflicts[0] if conflicts else new
            writes += 0 if conflicts else 1
    return writes


async def _sql_writer(database_url: str, cid: Any, ids: list[str], seconds: float,
                      seed: int) -> int:
    rng = random.Random(seed)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    deadline, commits = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < deadline:
            async with conn.transaction():
                for doc_id in sorted(rng.sample(ids, 2)):
                    await conn.execute(SQL_UPSERT, cid, doc_id)
                await asyncio.sleep(rng.uniform(0, 0.03))  # held open: commits out of order
            commits += 1
    finally:
        await conn.close()
    return commits


async def _settle(replicas: list[Replica], expected: dict[str, Doc], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(r.docs == expected for r in replicas):
            return
        await asyncio.sleep(0.05)


async def test_concurrent_writers_every_subscriber_ends_equal_to_the_table_in_order(
    database_url: str, syncd: SyncdProcess, collection: str, db: asyncpg.Connection
) -> None:
    cid = await collection_id(db, collection)
    stop = asyncio.Event()
    replicas = [Replica([syncd.url], collection, page=7) for _ in range(4)]
    tasks = [asyncio.create_task(r.run(stop)) for r in replicas]
    await asyncio.wait_for(asyncio.gather(*(r.subscribed.wait() for r in replicas)), 20)

    http_ids, sql_ids = [f"h{i}" for i in range(10)], [f"s{i}" for i in range(10)]
    writes = await asyncio.gather(
        *(_pushers([syncd.url], collection, http_ids, 3.0, seed) for seed in range(4)),
        *(_sql_writer(database_url, cid, sql_ids, 3.0, seed) for seed in range(2)),
    )
    assert sum(writes) > 100, writes
    expected = await table(db, collection)
    await _settle(replicas, expected, 10)

    # A replica that joined before any write and rejoined from its checkpoint later:
    late = Replica([syncd.url], collection, page=7)
    late.checkpoint = replicas[0].checkpoint
    late.docs = dict(replicas[0].docs)
    late_task = asyncio.create_task(late.run(stop))
    await _settle([late], expected, 10)
    await stop_all([*tasks, late_task], stop)

    for replica in [*replicas, late]:
        assert replica.docs == expected
    for replica in replicas:
        assert replica.resyncs == 1 and replica.connects == 1
        # Streamed only (after the first, empty pull): every version at most once, in order.
        for doc_id, versions in replica.frame_versions.items():
            assert versions == sorted(set(versions)), (doc_id, versions)
        assert replica.frames > 10


async def test_a_stalled_subscriber_does_not_slow_the_others_and_converges_later(
    database_url: str, collection: str, db: asyncpg.Connection
) -> None:
    server = SyncdProcess(database_url, env={"SYNCD_STREAM_BUFFER_BYTES": "65536"})
    try:
        async with websockets.connect(ws_url(server.url, collection), max_queue=1) as stalled, \
                httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert await stalled.recv() == '"RESYNC"'
            stop = asyncio.Event()
            fast = Replica([server.url], collection)
            fast_task = asyncio.create_task(fast.run(stop))
            await asyncio.wait_for(fast.subscribed.wait(), 10)

            # The stalled client reads nothing while ~12 MB of changes stream past it.
            payload = "x" * 100_000
            lags = []
            for batch in range(12):
                docs = [{"id": f"b{batch}-{i}", "title": "t", "payload": payload}
                        for i in range(10)]
                sent = time.monotonic()
                response = await http.post(f"/api/v1/sync/{collection}",
                                           json=[{"newDocumentState": d} for d in docs])
                assert response.json() == []
                want = {d["id"] for d in docs}
                while not want <= set(fast.docs):
                    await asyncio.sleep(0.005)
                    assert time.monotonic() - sent < 5, "the fast subscriber was held up"
                lags.append(time.monotonic() - sent)
            assert max(lags) < 2.0, lags

            # The stalled one resumes: it is told to resync, pulls, and ends complete.
            resumed = Replica([server.url], collection)
            saw_resync = False
            while True:
                message = await asyncio.wait_for(stalled.recv(), 10)
                if message == '"RESYNC"':
                    saw_resync = True
                    break
            assert saw_resync
            async with httpx.AsyncClient() as pull_client:
                await resumed.pull_all(pull_client)
            await stop_all([fast_task], stop)
        expected = await table(db, collection)
        assert resumed.docs == expected and fast.docs == expected
    finally:
        server.stop()


async def test_three_nodes_one_database_with_a_node_killed_mid_stream(
    database_url: str, collection: str, db: asyncpg.Connection
) -> None:
    nodes = [SyncdProcess(database_url) for _ in range(3)]
    urls = [n.url for n in nodes]
    cid = await collection_id(db, collection)
    stop = asyncio.Event()
    try:
        # Subscribers on each node; each knows the other nodes to fail over to.
        replicas = [Replica(urls[i:] + urls[:i], collection, page=10) for i in range(3)
                    for _ in range(2)]
        tasks = [asyncio.create_task(r.run(stop)) for r in replicas]
        await asyncio.wait_for(asyncio.gather(*(r.subscribed.wait() for r in replicas)), 20)

        ids = [f"m{i}" for i in range(15)]
        writers = asyncio.gather(
            *(_pushers(urls, collection, ids, 4.0, seed) for seed in range(3)),
            _sql_writer(database_url, cid, [f"q{i}" for i in range(5)], 4.0, 9),
        )
        await asyncio.sleep(1.5)
        nodes[0].kill()  # mid-stream: its subscribers must resume elsewhere
        writes = await writers
        assert sum(writes) > 50, writes

        expected = await table(db, collection)
        await _settle(replicas, expected, 15)
        await stop_all(tasks, stop)
        for replica in replicas:
            assert replica.docs == expected
        moved = replicas[:2]
        assert all(r.connects >= 2 for r in moved)  # they reconnected to another node
        # Cross-node frames really arrived: the replicas on node 2 and 3 got frames for
        # writes made through other nodes and by plain SQL.
        assert all(r.frames > 5 for r in replicas[2:])
    finally:
        for node in nodes:
            node.stop()


async def test_a_reconnect_storm_of_500_clients_is_served(
    syncd: SyncdProcess, collection: str
) -> None:
    async def connect() -> websockets.ClientConnection:
        ws = await websockets.connect(ws_url(syncd.url, collection), open_timeout=30)
        assert await asyncio.wait_for(ws.recv(), 30) == '"RESYNC"'
        return ws

    sockets = await asyncio.gather(*(connect() for _ in range(500)))
    try:
        async with httpx.AsyncClient(base_url=syncd.url) as http:
            await http.post(f"/api/v1/sync/{collection}",
                            json=[{"newDocumentState": {"id": "storm", "title": "t"}}])
        frames = await asyncio.gather(*(next_frame(ws, 30) for ws in sockets))
        assert all(f["documents"][0]["id"] == "storm" for f in frames)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


async def test_database_connection_loss_resyncs_subscribers_and_loses_nothing(
    postgres: PostgresServer, database_url: str, collection: str, db: asyncpg.Connection
) -> None:
    server = SyncdProcess(database_url)
    admin = await asyncpg.connect(asyncpg_dsn(postgres.admin_url))
    database = await db.fetchval("SELECT current_database()")
    stop = asyncio.Event()
    try:
        replica = Replica([server.url], collection)
        task = asyncio.create_task(replica.run(stop))
        await asyncio.wait_for(replica.subscribed.wait(), 10)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            acked: list[Doc] = []
            statuses: list[int] = []
            for i in range(40):
                if i == 10:  # PostgreSQL goes away for syncd: connections cut, none accepted
                    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = $1 AND application_name LIKE 'syncd%'", database
                    )
                if i == 20:
                    await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
                doc = {"id": f"d{i}", "title": "t", "_deleted": False}
                try:
                    response = await http.post(f"/api/v1/sync/{collection}",
                                               json=[{"newDocumentState": doc}])
                except httpx.TransportError:
                    continue
                statuses.append(response.status_code)
                if response.status_code == 200 and response.json() == []:
                    acked.append(doc)
                await asyncio.sleep(0.02)
        expected = await table(db, collection)
        assert all(expected[d["id"]] == d for d in acked)  # nothing acknowledged is lost
        assert len(acked) >= 20
        await _settle([replica], expected, 15)
        await stop_all([task], stop)
        assert replica.docs == expected
        assert set(statuses) == {200, 503}, statuses  # a failed push says "retry", never 500
        assert replica.resyncs >= 2  # told to resync once PostgreSQL was back
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
        server.stop()


async def test_sigterm_closes_streams_with_a_reconnect_code_and_exits_in_time(
    database_url: str, collection: str
) -> None:
    server = SyncdProcess(database_url)
    try:
        async with websockets.connect(ws_url(server.url, collection)) as ws:
            assert await ws.recv() == '"RESYNC"'
            started = time.monotonic()
            server.process.terminate()
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 15)
            assert ws.close_code in (1001, 1012)
        server.process.wait(15)
        assert time.monotonic() - started < 15
        assert server.process.returncode == 0
    finally:
        server.stop()


async def test_frames_of_every_length_class_arrive_intact_and_in_order(
    syncd: SyncdProcess, collection: str
) -> None:
    """`syncd serve` encodes each frame into websocket bytes once and writes them to every socket
    itself; the client checks every header: 7-bit, 16-bit and 64-bit payload lengths and the
    boundaries between them (125/126, 65535/65536)."""
    async with websockets.connect(ws_url(syncd.url, collection), max_size=None) as ws, \
            httpx.AsyncClient(base_url=syncd.url, timeout=30) as http:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'

        async def roundtrip(n: int, pad: int) -> int:
            doc = {"id": f"L{n}", "title": "x" * pad}
            response = await http.post(f"/api/v1/sync/{collection}",
                                        json=[{"newDocumentState": doc}])
            assert response.json() == []
            message = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(message, str)
            frame = orjson.loads(message)
            assert [(d["id"], d["title"]) for d in frame["documents"]] == [(doc["id"], "x" * pad)]
            return len(message.encode())

        base = await roundtrip(0, 0)  # the frame's length without padding
        assert base <= 120, base
        lengths = [await roundtrip(n + 1, max(0, target - base)) for n, target in enumerate(
            [*range(122, 130), *range(65_532, 65_540)]
        )]
        assert min(lengths) <= 125 < 126 <= max(x for x in lengths if x < 1000)
        assert any(x <= 65_535 for x in lengths if x > 1000)
        assert any(x >= 65_536 for x in lengths)
