"""Reads from a real streaming hot standby (SYNCD_DATABASE_REPLICA_URLS, issue #14): pulls on the
replica never skip or reorder a committed change, a lagging or vanished replica leaves the
rotation without failing a request, and streams never go backwards."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import websockets

from syncd import checkpoint as checkpoints
from syncd.checkpoint import Position
from syncd.db import store as store_module
from syncd.db.replicas import label_of
from syncd.db.urls import asyncpg_dsn
from tests.conftest import TODO_SCHEMA, register
from tests.integration.test_ordering import INSERT_SQL, _http_pusher, _sql_writer
from tests.standby import StandbyCluster
from tests.support import SyncdProcess

MAX_LAG_MS = 400


@pytest.fixture(scope="module")
def cluster() -> Iterator[StandbyCluster]:
    made = StandbyCluster()
    yield made
    made.close()


@pytest.fixture(scope="module")
def node(cluster: StandbyCluster) -> Iterator[SyncdProcess]:
    server = SyncdProcess(cluster.primary_url, env={
        "SYNCD_DATABASE_REPLICA_URLS": cluster.standby_url,
        "SYNCD_REPLICA_MAX_LAG_MS": str(MAX_LAG_MS),
        "SYNCD_REPLICA_CHECK_MS": "50",
    })
    yield server
    server.stop()


@pytest.fixture()
def replicated(cluster: StandbyCluster) -> str:
    name = register(cluster.primary_url, TODO_SCHEMA)
    cluster.wait_replayed()
    return name


def metric(base: str, name: str, labels: str) -> float:
    text = httpx.get(base + "/metrics").text
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def replica_label(cluster: StandbyCluster) -> str:
    return f'replica="{label_of(cluster.standby_url)}"'


def wait_for(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_pulls_are_served_by_the_replica_and_pushes_by_the_primary(
    cluster: StandbyCluster, node: SyncdProcess, replicated: str
) -> None:
    label = replica_label(cluster)
    wait_for(lambda: metric(node.url, "syncd_replica_in_use", label) == 1, "the replica in use")
    before = metric(node.url, "syncd_replica_reads_total", label)
    doc = {"id": "a", "title": "t", "_deleted": False}
    pushed = httpx.post(f"{node.url}/api/v1/sync/{replicated}", json=[{"newDocumentState": doc}])
    assert pushed.json() == []
    cluster.wait_replayed()
    pulled = httpx.get(f"{node.url}/api/v1/sync/{replicated}").json()
    assert pulled["documents"] == [doc]
    assert metric(node.url, "syncd_replica_reads_total", label) > before
    assert 0 <= metric(node.url, "syncd_replica_lag_seconds", label) < MAX_LAG_MS / 1000


async def test_small_page_readers_on_the_replica_end_with_the_primary_s_state_in_order(
    cluster: StandbyCluster, node: SyncdProcess, replicated: str
) -> None:
    """Several writers commit out of order on the primary (transactions held open, one for
    1.5 s, plain SQL and pushes); readers pull pages of 3 through syncd, which reads the
    standby. Every reader ends with exactly the primary's final state, never went back."""
    db = await asyncpg.connect(asyncpg_dsn(cluster.primary_url))
    cid = await db.fetchval("SELECT id FROM syncd_collections WHERE name = $1", replicated)
    epoch = await db.fetchval("SELECT to_hex(system_identifier) FROM pg_control_system()")
    label = replica_label(cluster)
    reads_before = metric(node.url, "syncd_replica_reads_total", label)
    sql_ids = [f"sql-{i}" for i in range(12)]
    http_ids = [f"http-{i}" for i in range(8)]
    deadline = time.monotonic() + 5.0

    async def held_open() -> int:
        conn = await asyncpg.connect(asyncpg_dsn(cluster.primary_url))
        try:
            await asyncio.sleep(1.0)
            async with conn.transaction():  # takes its xid early, commits 1.5 s later
                await conn.execute(
                    "INSERT INTO syncd_documents (collection_id, id, data) VALUES ($1, 'held', "
                    "'{\"id\": \"held\", \"title\": \"late\", \"n\": 1}')", cid)
                await asyncio.sleep(1.5)
        finally:
            await conn.close()
        return 1

    async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:

        async def reader(limit: int) -> tuple[dict[str, Any], list[Position]]:
            state: dict[str, Any] = {}
            positions: list[Position] = []
            cp: Any = None
            quiet_since: float | None = None
            while True:
                params = {"limit": str(limit)}
                if cp is not None:
                    params["checkpoint"] = orjson.dumps(cp).decode()
                response = await client.get(f"/api/v1/sync/{replicated}", params=params)
                assert response.status_code == 200, response.text
                body = response.json()
                for doc in body["documents"]:
                    state[doc["id"]] = doc
                if body["documents"]:
                    cp = body["checkpoint"]
                    positions.append(checkpoints.decode(cp, epoch))
                    quiet_since = None
                    continue
                if writers.done() and replayed.done():
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 0.5:
                        return state, positions
                await asyncio.sleep(0.01)

        writers = asyncio.ensure_future(asyncio.gather(
            *(_sql_writer(cluster.primary_url, cid, sql_ids, random.Random(s), deadline, hold)
              for s, hold in ((1, 50), (2, 0), (3, 20))),
            *(_http_pusher(client, replicated, http_ids, random.Random(10 + s), deadline)
              for s in range(2)),
            held_open(),
        ))

        async def then_replayed() -> None:  # the readers stop only after this
            await writers
            await asyncio.to_thread(cluster.wait_replayed)

        replayed = asyncio.ensure_future(then_replayed())
        results = await asyncio.wait_for(asyncio.gather(reader(3), reader(7), reader(3)), 90)
        commits = await writers

    stored = {r["id"]: orjson.loads(r["data"]) for r in await db.fetch(
        "SELECT id, data FROM syncd_documents WHERE collection_id = $1", cid)}
    await db.close()
    assert sum(commits) > 50, commits
    assert "held" in stored
    for state, positions in results:
        assert state == stored  # deep-equal: every document at its final version
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
    # The pages really came from the standby.
    assert metric(node.url, "syncd_replica_reads_total", label) - reads_before > 100


def test_a_lagging_replica_leaves_the_rotation_and_comes_back(
    cluster: StandbyCluster, node: SyncdProcess, replicated: str
) -> None:
    label = replica_label(cluster)
    wait_for(lambda: metric(node.url, "syncd_replica_in_use", label) == 1, "the replica in use")
    cluster.standby("SELECT pg_wal_replay_pause()")
    try:
        doc = {"id": "while-paused", "title": "t", "_deleted": False}
        assert httpx.post(f"{node.url}/api/v1/sync/{replicated}",
                          json=[{"newDocumentState": doc}]).json() == []
        wait_for(lambda: metric(node.url, "syncd_replica_in_use", label) == 0,
                 "the lagging replica out of rotation")
        assert metric(node.url, "syncd_replica_lag_seconds", label) > MAX_LAG_MS / 1000
        # Out of rotation: the primary answers, with the change the replica has not replayed.
        pulled = httpx.get(f"{node.url}/api/v1/sync/{replicated}").json()
        assert doc in pulled["documents"]
    finally:
        cluster.standby("SELECT pg_wal_replay_resume()")
    wait_for(lambda: metric(node.url, "syncd_replica_in_use", label) == 1,
             "the replica back in rotation")


def test_a_replica_that_goes_away_fails_no_request(
    cluster: StandbyCluster, node: SyncdProcess, replicated: str
) -> None:
    label = replica_label(cluster)
    wait_for(lambda: metric(node.url, "syncd_replica_in_use", label) == 1, "the replica in use")
    cluster.stop_standby()
    try:
        for i in range(20):  # the first ones may still pick the replica: retried on the primary
            doc = {"id": f"gone-{i}", "title": "t", "_deleted": False}
            assert httpx.post(f"{node.url}/api/v1/sync/{replicated}",
                              json=[{"newDocumentState": doc}]).json() == []
            response = httpx.get(f"{node.url}/api/v1/sync/{replicated}?limit=1000")
            assert response.status_code == 200, response.text
            assert doc in response.json()["documents"]
        assert metric(node.url, "syncd_replica_in_use", label) == 0
    finally:
        cluster.start_standby()
    wait_for(lambda: metric(node.url, "syncd_replica_in_use", label) == 1,
             "the replica back in rotation", timeout=30)


async def test_a_stream_never_goes_backwards_while_its_reads_move_between_replica_and_primary(
    cluster: StandbyCluster, node: SyncdProcess, replicated: str
) -> None:
    url = node.url.replace("http://", "ws://") + f"/api/v1/sync/{replicated}/stream"
    epoch = str(await asyncio.to_thread(
        cluster.primary, "SELECT to_hex(system_identifier) FROM pg_control_system()"))
    positions: list[Position] = []
    received: dict[str, int] = {}
    async with websockets.connect(url) as ws, httpx.AsyncClient(base_url=node.url) as http:
        assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'

        async def collect() -> None:
            async for message in ws:
                if message == '"RESYNC"':
                    continue
                frame = orjson.loads(message)
                positions.append(checkpoints.decode(frame["checkpoint"], epoch))
                for doc in frame["documents"]:
                    received[doc["id"]] = doc["n"]

        collector = asyncio.ensure_future(collect())
        for i in range(60):
            if i == 20:
                await asyncio.to_thread(cluster.standby, "SELECT pg_wal_replay_pause()")
            if i == 40:
                await asyncio.to_thread(cluster.standby, "SELECT pg_wal_replay_resume()")
            doc_id = f"s{i % 7}"
            doc = {"id": doc_id, "title": "t", "n": i, "_deleted": False}
            row: dict[str, Any] = {"newDocumentState": doc}
            if i >= 7:
                row["assumedMasterState"] = await _stored(http, replicated, doc_id, None)
            answer = await http.post(f"/api/v1/sync/{replicated}", json=[row])
            assert answer.json() == [], answer.text
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        collector.cancel()
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert received == {f"s{k}": max(i for i in range(60) if i % 7 == k) for k in range(7)}


async def _stored(http: httpx.AsyncClient, name: str, doc_id: str, fallback: Any) -> Any:
    """The primary's current state of a document, via a conflict answer (no read needed)."""
    probe = {"id": doc_id, "title": "probe", "n": -1, "_deleted": False}
    answer = await http.post(f"/api/v1/sync/{name}",
                             json=[{"assumedMasterState": probe, "newDocumentState": probe}])
    conflicts = answer.json()
    return conflicts[0] if conflicts else fallback


async def test_on_the_standby_a_late_committer_holds_the_horizon_and_the_naive_scan_skips_it(
    cluster: StandbyCluster, replicated: str
) -> None:
    """The standby's snapshot horizon comes from replayed WAL: an xid the primary assigned and
    has not committed holds it back on the standby too (docs/ordering.md, "On a replica"), and
    the same scan without the horizon skips the late row for good."""
    primary = await asyncpg.connect(asyncpg_dsn(cluster.primary_url))
    late = await asyncpg.connect(asyncpg_dsn(cluster.primary_url))
    standby = await asyncpg.connect(asyncpg_dsn(cluster.standby_url))
    naive_sql = store_module.PULL_SQL.replace(
        "AND d.xid < pg_snapshot_xmin(pg_current_snapshot())", "")
    assert naive_sql != store_module.PULL_SQL
    try:
        cid = await primary.fetchval("SELECT id FROM syncd_collections WHERE name = $1",
                                     replicated)
        transaction = late.transaction()
        await transaction.start()
        await late.execute(INSERT_SQL, cid, "late")  # the smaller xid, committed last
        await primary.execute(INSERT_SQL, cid, "early")
        await asyncio.to_thread(cluster.wait_replayed)
        assert await standby.fetch(store_module.PULL_SQL, cid, "", 0, 0, 10) == []
        naive = await standby.fetch(naive_sql, cid, "", 0, 0, 10)
        assert [orjson.loads(r[0])["id"] for r in naive] == ["early"]
        await transaction.commit()
        await asyncio.to_thread(cluster.wait_replayed)
        after = naive[-1]
        assert await standby.fetch(naive_sql, cid, "", after[1], after[2], 10) == []  # skipped
        served = await standby.fetch(store_module.PULL_SQL, cid, "", 0, 0, 10)
        assert sorted(orjson.loads(r[0])["id"] for r in served) == ["early", "late"]
    finally:
        for conn in (primary, late, standby):
            await conn.close()
