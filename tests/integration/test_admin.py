"""``GET /admin/api/overview`` (the admin page's data) against real nodes on one database.

The nodes heartbeat every 0.5 s (SYNCD_ADMIN_HEARTBEAT_SECONDS), so a test waits at most a few
beats for what it did to show. The database is the module's own: only its nodes appear.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from tests.adminworld import (
    ENV,
    HEARTBEAT_SECONDS,
    SERVICE_KEY,
    bearer,
    overview,
    token,
    wait_for,
)
from tests.conftest import TODO_SCHEMA, register
from tests.support import PostgresServer, SyncdProcess

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def admin_db(postgres: PostgresServer) -> Iterator[str]:
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(scope="module")
def node(admin_db: str) -> Iterator[SyncdProcess]:
    server = SyncdProcess(admin_db, env=ENV)
    yield server
    server.stop()


def node_row(url: str, port: int) -> dict[str, Any] | None:
    return next((n for n in overview(url)["nodes"] if n["port"] == port), None)


def test_the_data_needs_a_service_key_or_the_admin_claim(node: SyncdProcess) -> None:
    url = f"{node.url}/admin/api/overview"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_token"
    assert httpx.get(url, headers=bearer("sk_not-a-key")).status_code == 401
    # Valid credentials without the claim: known, but not an admin.
    user = httpx.get(url, headers=bearer(token("u1", role="editor")))
    assert user.status_code == 403
    assert user.json()["error"]["code"] == "not_admin"
    assert "'role' includes 'admin'" in user.json()["error"]["message"]
    # The claim may be a list or a space-separated string, as access rules read it.
    for role in (["editor", "admin"], "editor admin"):
        admitted = httpx.get(url, headers=bearer(token("a1", role=role)))
        assert admitted.status_code == 200, admitted.text
    served = httpx.get(url, headers=bearer(SERVICE_KEY))
    assert served.status_code == 200
    assert served.headers["cache-control"] == "no-store"
    assert set(served.json()) == {"generated_at", "node", "nodes", "lag", "collections", "errors"}


def test_the_static_shell_is_served_without_credentials_and_holds_no_data(
    node: SyncdProcess,
) -> None:
    page = httpx.get(f"{node.url}/admin")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "admin/admin.js" in page.text and "admin/api/overview" not in page.text
    for asset, kind in (("admin.js", "text/javascript"), ("admin.css", "text/css")):
        served = httpx.get(f"{node.url}/admin/{asset}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(kind)
    assert "admin/api/overview" in httpx.get(f"{node.url}/admin/admin.js").text
    moved = httpx.get(f"{node.url}/admin/")
    assert moved.status_code == 308 and moved.headers["location"] == "/admin"


def test_every_node_shows_every_node_and_a_stopped_or_dead_one_drops_out(
    node: SyncdProcess, admin_db: str
) -> None:
    wait_for(lambda: node_row(node.url, node.port), what="the first node's heartbeat")
    second = SyncdProcess(admin_db, env=ENV)
    third = SyncdProcess(admin_db, env=ENV)
    try:
        def all_three(url: str) -> set[int] | None:
            ports = {n["port"] for n in overview(url)["nodes"]}
            return ports if {node.port, second.port, third.port} <= ports else None

        # Any node's page shows all of them.
        wait_for(lambda: all_three(node.url), what="three nodes on the first node")
        wait_for(lambda: all_three(second.url), what="three nodes on the second node")
        row = node_row(second.url, second.port)
        assert row is not None
        assert row["host"] == "127.0.0.1" and row["pid"] == second.process.pid
        assert row["heartbeat_seconds"] == HEARTBEAT_SECONDS
        assert row["subscribers"] == {"native": 0, "rxdb-server": 0, "rxdb-ws": 0}
        assert overview(second.url)["node"] == row["id"]

        # Stopped: it deletes its own row on the way out, so it is gone with the next read.
        second.stop()
        assert node_row(node.url, second.port) is None

        # Killed: its row is no longer refreshed and drops out after three heartbeats.
        third.kill()
        assert node_row(node.url, third.port) is not None
        wait_for(lambda: node_row(node.url, third.port) is None,
                 timeout=3 * HEARTBEAT_SECONDS + 3, what="the killed node to drop out")
        assert node_row(node.url, node.port) is not None
    finally:
        second.stop()
        third.stop()


async def test_counts_move_with_pushes_pulls_conflicts_and_streams(
    node: SyncdProcess, admin_db: str
) -> None:
    name = await asyncio.to_thread(register, admin_db, TODO_SCHEMA)
    api = f"{node.url}/api/v1/sync/{name}"
    before = wait_for(lambda: node_row(node.url, node.port), what="the node's heartbeat")
    ws_url = node.url.replace("http://", "ws://") + f"/api/v1/sync/{name}/stream"
    offered = [Subprotocol("syncd.v1"), Subprotocol(f"bearer.{SERVICE_KEY}")]
    async with websockets.connect(ws_url, subprotocols=offered) as stream:
        assert await asyncio.wait_for(stream.recv(), 10) == '"RESYNC"'
        streaming = await asyncio.to_thread(wait_for, lambda: (
            (row := node_row(node.url, node.port)) and row["subscribers"]["native"] == 1
            and row), 10, "the stream to be counted")
        assert streaming["subscribers"] == {"native": 1, "rxdb-server": 0, "rxdb-ws": 0}

        async with httpx.AsyncClient(headers=bearer(SERVICE_KEY), timeout=30) as http:
            docs = [{"id": f"d{i}", "title": "t", "_deleted": False} for i in range(5)]
            pushed = await http.post(api, json=[{"newDocumentState": d} for d in docs])
            assert pushed.json() == []
            # d0 deleted: a tombstone; a stale write of d1: one conflict.
            gone = await http.post(api, json=[{"assumedMasterState": docs[0],
                                               "newDocumentState": {**docs[0], "_deleted": True}}])
            assert gone.json() == []
            stale = await http.post(api, json=[{"assumedMasterState": {**docs[1], "title": "x"},
                                                "newDocumentState": {**docs[1], "title": "y"}}])
            assert len(stale.json()) == 1
            pulled = await http.get(api, params={"limit": 100})
            assert len(pulled.json()["documents"]) == 5

    def moved() -> dict[str, Any] | None:
        row = node_row(node.url, node.port)
        return row if row and row["pushed"] - before["pushed"] == 7 else None

    after = await asyncio.to_thread(wait_for, moved, 10, "the pushes to be counted")
    assert after["conflicts"] - before["conflicts"] == 1
    assert after["pulled"] - before["pulled"] == 5
    # The stream was closed: no longer counted once the next heartbeat is in.
    await asyncio.to_thread(wait_for, lambda: (
        (row := node_row(node.url, node.port)) and row["subscribers"]["native"] == 0),
        10, "the closed stream to be uncounted")

    def counted() -> dict[str, Any] | None:
        listed = {c["name"]: c for c in overview(node.url)["collections"]}
        return listed.get(name) if listed.get(name, {}).get("tombstones") == 1 else None

    # Collection counts are cached for up to 5 s per node.
    collection = await asyncio.to_thread(wait_for, counted, 10, "the collection's counts")
    assert collection == {"name": name, "primary_key": "id", "schema_version": 0,
                          "documents": 4, "tombstones": 1}


def test_recent_errors_are_listed_with_code_route_and_count(node: SyncdProcess) -> None:
    with httpx.Client(base_url=node.url, headers=bearer(SERVICE_KEY)) as http:
        for _ in range(3):
            assert http.get("/api/v1/sync/no_such_collection").status_code == 404
        name = "c_errors"
        assert http.get(f"/api/v1/sync/{name}", params={"limit": 0}).status_code == 404

    def listed() -> dict[str, Any] | None:
        errors = overview(node.url)["errors"]
        return next((e for e in errors if e["code"] == "unknown_collection"
                     and e["count"] >= 4), None)

    found = wait_for(listed, what="the 404s in the error list")
    assert found["status"] == 404
    assert found["route"] == "/api/v1/sync/{collection}"
    assert found["count"] == 4
    # The node lists them too, in its own row; refused admin reads are errors as well.
    httpx.get(f"{node.url}/admin/api/overview")
    wait_for(lambda: any(e["code"] == "missing_token" and e["route"] == "/admin/api/overview"
                         for e in overview(node.url)["errors"]), what="the 401 in the list")


def test_the_lag_warning_follows_the_oldest_transaction(node: SyncdProcess) -> None:
    lag = overview(node.url)["lag"]
    assert lag["warning_seconds"] == 10.0
    assert lag["warning"] is False and 0 <= lag["oldest_transaction_age_seconds"] < 10


def test_streams_are_counted_per_way_in(node: SyncdProcess, admin_db: str) -> None:
    name = register(admin_db, TODO_SCHEMA)

    def subscribers() -> dict[str, int]:
        row = node_row(node.url, node.port)
        assert row is not None
        counts: dict[str, int] = row["subscribers"]
        return counts

    with httpx.Client(base_url=node.url, headers=bearer(SERVICE_KEY), timeout=30) as http, \
            http.stream("GET", f"/rxdb/{name}/0/pullStream") as events:
        assert events.status_code == 200
        wait_for(lambda: subscribers() == {"native": 0, "rxdb-server": 1, "rxdb-ws": 0},
                 10, "the Server-Sent Events stream to be counted as rxdb-server")
    wait_for(lambda: subscribers()["rxdb-server"] == 0, 10, "the ended stream to be uncounted")


def test_mode_none_on_loopback_is_open_without_credentials(admin_db: str) -> None:
    # Served on 127.0.0.1 (a public bind is refused: tests/unit/test_admin_guard.py).
    server = SyncdProcess(admin_db, env={"SYNCD_AUTH_MODE": "none"})
    try:
        answer = httpx.get(f"{server.url}/admin/api/overview", timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["lag"]["warning"] is False
    finally:
        server.stop()
