"""``GET /metrics`` against a real syncd: every metric moves by exactly what was done.

Counts are read from the scrape (prometheus-client's own parser) before and after a step, so the
tests also hold on the session's shared server; the exact-count test has a server of its own.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil  # type: ignore[import-untyped]
import pytest
import websockets
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from syncd.db.urls import asyncpg_dsn
from tests.conftest import TODO_SCHEMA, register
from tests.support import SyncdProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def gauge(text: str, name: str) -> float:
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert found, f"{name} missing from:\n{text}"
    return float(found.group(1))


def scrape(server: SyncdProcess) -> Samples:
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the series does not exist yet (a counter never moved)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def doc(doc_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": doc_id, "title": "t", "_deleted": False, **fields}


@pytest.fixture()
def own_syncd(database_url: str) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url)
    yield server
    server.stop()


async def test_the_oldest_transaction_holding_an_xid_shows_its_age(
    syncd: SyncdProcess, database_url: str
) -> None:
    holder = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with holder.transaction():
            await holder.fetchval("SELECT pg_current_xact_id()")  # takes an xid: holds pulls
            await asyncio.sleep(2.5)
            held = httpx.get(f"{syncd.url}/metrics")
        released = httpx.get(f"{syncd.url}/metrics")
    finally:
        await holder.close()
    assert held.status_code == 200 and held.headers["content-type"].startswith("text/plain")
    assert gauge(held.text, "syncd_database_up") == 1
    assert gauge(held.text, "syncd_oldest_transaction_age_seconds") >= 2.5
    assert gauge(released.text, "syncd_oldest_transaction_age_seconds") < 2.0


async def test_open_streams_are_counted(syncd: SyncdProcess, collection: str) -> None:
    before = gauge(httpx.get(f"{syncd.url}/metrics").text, "syncd_stream_subscribers")
    url = syncd.url.replace("http://", "ws://") + f"/api/v1/sync/{collection}/stream"
    async with websockets.connect(url) as first, websockets.connect(url) as second:
        for ws in (first, second):
            assert await asyncio.wait_for(ws.recv(), 10) == '"RESYNC"'
        during = gauge(httpx.get(f"{syncd.url}/metrics").text, "syncd_stream_subscribers")
    assert during == before + 2


NATIVE = "/api/v1/sync/{collection}"


async def test_pushes_pulls_a_conflict_and_a_stream_move_the_counters_exactly(
    own_syncd: SyncdProcess, collection: str
) -> None:
    server = own_syncd
    base = server.url.replace("http://", "ws://")
    http = httpx.AsyncClient(base_url=server.url, timeout=30)
    start = scrape(server)
    async with websockets.connect(f"{base}/api/v1/sync/{collection}/stream") as stream:
        assert await asyncio.wait_for(stream.recv(), 10) == '"RESYNC"'
        with_stream = scrape(server)
        assert value(with_stream, "syncd_stream_subscribers") == 1

        # A push of three documents: one frame to the stream, sent before the answer.
        pushed = await http.post(f"/api/v1/sync/{collection}",
                                 json=[{"newDocumentState": doc(f"d{i}")} for i in range(3)])
        assert pushed.json() == []
        frame = orjson.loads(await asyncio.wait_for(stream.recv(), 10))
        assert len(frame["documents"]) == 3
        # A stale update of d0: one conflict, nothing written, no frame.
        stale = await http.post(f"/api/v1/sync/{collection}", json=[
            {"assumedMasterState": doc("d0", done=True), "newDocumentState": doc("d0", n=1)},
        ])
        assert stale.json() == [doc("d0")]
        # Two pulls (native and rxdb-server), three documents each.
        assert len((await http.get(f"/api/v1/sync/{collection}")).json()["documents"]) == 3
        rxdb = await http.get(f"/rxdb/{collection}/0/pull", params={"lwt": 0, "id": ""})
        assert len(rxdb.json()["documents"]) == 3
        # A refused request: the label is the route template, never the unknown name.
        assert (await http.get("/api/v1/sync/no_such_thing")).status_code == 404
        # RxDB's websocket protocol: one pull, one write of one row.
        async with websockets.connect(f"{base}/rxdb/ws") as ws:
            for method, params in (("masterChangesSince", [None, 10]),
                                   ("masterWrite", [[{"newDocumentState": doc("w1")}]])):
                await ws.send(orjson.dumps({"id": method, "collection": collection,
                                            "method": method, "params": params}).decode())
                answer = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert answer["id"] == method and "error" not in answer
            # Its write reaches the native stream as a frame too.
            assert [d["id"] for d in orjson.loads(
                await asyncio.wait_for(stream.recv(), 10))["documents"]] == ["w1"]
        during = scrape(server)
    await asyncio.sleep(0.3)  # the server notices the closed stream
    end = scrape(server)
    await http.aclose()

    def delta(name: str, **labels: str) -> float:
        return moved(start, during, name, **labels)

    assert delta("syncd_http_requests_total", way="native", route=NATIVE, method="POST",
                 status="200") == 2
    assert delta("syncd_http_requests_total", way="native", route=NATIVE, method="GET",
                 status="200") == 1
    assert delta("syncd_http_requests_total", way="native", route=NATIVE, method="GET",
                 status="404") == 1
    assert delta("syncd_http_requests_total", way="rxdb-server",
                 route="/rxdb/{collection}/{version}/pull", method="GET", status="200") == 1
    # /metrics itself: the scrape that came before "during" is counted in it.
    assert delta("syncd_http_requests_total", way="other", route="/metrics", method="GET",
                 status="200") == 2
    assert delta("syncd_http_request_duration_seconds_count", way="native", route=NATIVE,
                 method="POST") == 2
    assert delta("syncd_documents_pushed_total", collection=collection) == 3 + 1 + 1
    assert delta("syncd_push_conflicts_total", collection=collection) == 1
    assert delta("syncd_documents_pulled_total", collection=collection) == 3 + 3 + 3
    assert delta("syncd_rxdb_ws_messages_total", method="masterChangesSince", outcome="ok") == 1
    assert delta("syncd_rxdb_ws_messages_total", method="masterWrite", outcome="ok") == 1
    assert delta("syncd_rxdb_ws_message_duration_seconds_count", method="masterWrite") == 1
    assert delta("syncd_stream_frames_sent_total") == 2
    # Both writes were this node's commits on a streamed feed: each timed commit → frame.
    assert delta("syncd_stream_feed_lag_seconds_count") == 2
    assert 0 < delta("syncd_stream_feed_lag_seconds_sum") < 2
    assert sum(moved(start, end, name, **dict(labels)) for name, labels in end
               if name == "syncd_stream_resyncs_total") == 0
    assert value(end, "syncd_stream_subscribers") == 0
    assert value(end, "syncd_database_up") == 1
    assert value(end, "syncd_db_pool_connections_max") == 10  # SYNCD_DB_POOL_MAX's default
    # Raw paths never become labels.
    assert not any("no_such_thing" in str(labels) for _, labels in end)


def test_database_connections_in_use_are_counted(
    own_syncd: SyncdProcess, collection: str, database_url: str
) -> None:
    """A push blocked on a row lock holds a pool connection, and the gauge shows it."""
    http = httpx.Client(base_url=own_syncd.url, timeout=30)
    assert http.post(f"/api/v1/sync/{collection}", json=[{"newDocumentState": doc("x")}]).json() \
        == []
    assert value(scrape(own_syncd), "syncd_db_pool_connections_in_use") == 0

    async def hold_lock(locked: threading.Event, release: threading.Event) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM syncd_documents WHERE id = 'x' FOR UPDATE")
                locked.set()
                await asyncio.to_thread(release.wait, 30)
        finally:
            await conn.close()

    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=asyncio.run, args=(hold_lock(locked, release),))
    holder.start()
    try:
        assert locked.wait(10)
        blocked = threading.Thread(target=http.post, args=(f"/api/v1/sync/{collection}",), kwargs={
            "json": [{"assumedMasterState": doc("x"), "newDocumentState": doc("x", n=2)}]})
        blocked.start()
        in_use = 0.0
        for _ in range(100):
            in_use = value(scrape(own_syncd), "syncd_db_pool_connections_in_use")
            if in_use:
                break
            threading.Event().wait(0.05)
        assert in_use == 1
    finally:
        release.set()
        holder.join(10)
    blocked.join(10)
    assert value(scrape(own_syncd), "syncd_db_pool_connections_in_use") == 0
    http.close()


async def test_a_stream_that_cannot_keep_up_is_counted_as_a_resync(
    database_url: str, collection: str
) -> None:
    server = SyncdProcess(database_url, env={"SYNCD_STREAM_BUFFER_BYTES": "65536",
                                             "SYNCD_PUSH_ECHO_WAIT_MS": "0"})
    try:
        url = server.url.replace("http://", "ws://") + f"/api/v1/sync/{collection}/stream"
        # A small receive window set before connecting: otherwise loopback's autotuned socket
        # buffers can swallow everything pushed below, and no frame ever waits in syncd.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        raw.connect(("127.0.0.1", server.port))
        async with websockets.connect(url, sock=raw, max_queue=1) as stalled, \
                httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert await stalled.recv() == '"RESYNC"'
            before = scrape(server)
            payload = "x" * 100_000
            for batch in range(24):  # ~24 MB the stalled client does not read
                rows = [{"newDocumentState": doc(f"b{batch}-{i}", payload=payload)}
                        for i in range(10)]
                assert (await http.post(f"/api/v1/sync/{collection}", json=rows)).json() == []
            while await asyncio.wait_for(stalled.recv(), 10) != '"RESYNC"':
                pass
            after = scrape(server)
        assert moved(before, after, "syncd_stream_resyncs_total", reason="overflow") >= 1
        assert moved(before, after, "syncd_stream_resyncs_total", reason="echo_lag") == 0
    finally:
        server.stop()


def _worker_files(server: SyncdProcess) -> dict[int, list[str]]:
    """Each worker's metric files, found through the directory syncd handed its workers."""
    files: dict[int, list[str]] = {}
    for child in psutil.Process(server.process.pid).children():
        shared = child.environ().get("PROMETHEUS_MULTIPROC_DIR")
        found = [str(p) for p in Path(shared).glob(f"*_{child.pid}.db")] if shared else []
        if found:  # a worker (not multiprocessing's helper process)
            files[child.pid] = found
    return files


def test_two_workers_are_summed_whichever_answers(database_url: str) -> None:
    collection = register(database_url, TODO_SCHEMA)
    server = SyncdProcess(database_url, env={"SYNCD_WORKERS": "2"})
    try:
        # A new connection per push: the kernel spreads them over both workers.
        for i in range(40):
            with httpx.Client(base_url=server.url, timeout=30) as http:
                assert http.post(f"/api/v1/sync/{collection}",
                                 json=[{"newDocumentState": doc(f"p{i}")}]).json() == []
        per_worker = {}
        for pid, files in _worker_files(server).items():
            merged = MultiProcessCollector.merge(files, accumulate=False)  # type: ignore[no-untyped-call]
            per_worker[pid] = sum(
                s.value for family in merged for s in family.samples
                if s.name == "syncd_documents_pushed_total"
                and s.labels == {"collection": collection})
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        assert sum(per_worker.values()) == 40
        for _ in range(6):  # whichever worker answers the scrape reports the sum
            samples = scrape(server)
            assert value(samples, "syncd_documents_pushed_total", collection=collection) == 40
            assert value(samples, "syncd_http_requests_total", way="native", route=NATIVE,
                         method="POST", status="200") == 40
            assert value(samples, "syncd_db_pool_connections_max") == 20
        shared = {Path(f).parent for files in _worker_files(server).values() for f in files}
    finally:
        server.stop()
    assert shared and not any(p.exists() for p in shared), "syncd left its metrics directory"
