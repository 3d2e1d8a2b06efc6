"""An ``auth`` message that changes the identity of an ``/rxdb/ws`` socket re-scopes its streams:
nothing of the old identity's partition is sent once the ``auth`` is handled."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import websockets

from tests.authworld import HS_JWT_ENV
from tests.conftest import TODO_SCHEMA, register
from tests.integration.test_rxdb_ws import (
    RxClient,
    auth_message,
    doc,
    http_push,
    token,
    ws_url,
)
from tests.support import SyncdProcess

RESYNC = "RESYNC"


@pytest.fixture(scope="module")
def jwt_server(database_url: str) -> Iterator[SyncdProcess]:
    server = SyncdProcess(database_url, env=HS_JWT_ENV)
    yield server
    server.stop()


@pytest.fixture()
def owned(database_url: str) -> str:
    """A collection whose rows belong to the caller's ``sub``."""
    return register(database_url, TODO_SCHEMA, access={"partition_claim": "sub"})


def ids_in(frames: list[dict[str, object]]) -> list[str]:
    result = [f["result"] for f in frames]
    return [d["id"] for r in result if isinstance(r, dict) for d in r["documents"]]


async def test_a_new_identity_ends_the_old_ones_streams_and_resubscribes(
    jwt_server: SyncdProcess, owned: str
) -> None:
    alice, bob = token("alice"), token("bob")
    async with websockets.connect(ws_url(jwt_server, f"?access_token={alice}")) as ws:
        client = RxClient(ws)
        await client.subscribe(owned)
        http_push(jwt_server, owned, doc("a1"), token=alice)
        assert ids_in([await client.stream_frame(owned)]) == ["a1"]

        # Changes of alice's partition still on their way while the auth switches to bob.
        http_push(jwt_server, owned, *(doc(f"a-burst-{i}") for i in range(20)), token=alice)
        await ws.send(auth_message({"Authorization": f"Bearer {bob}"}))
        page = await client.call(owned, "masterChangesSince", None, 100)
        assert page["result"]["documents"] == []  # bob's partition

        http_push(jwt_server, owned, doc("a2"), token=alice)  # alice's: must never arrive
        http_push(jwt_server, owned, doc("b1"), token=bob)
        frames: list[dict[str, object]] = []
        with contextlib.suppress(TimeoutError):
            while "b1" not in ids_in(frames):
                frames.append(await client.stream_frame(owned, within=3))
        await client.quiet(0.5)
        frames += client.stream
        assert "a2" not in ids_in(frames), frames

        # The stream starts over under bob (two RESYNCs, as a new subscription), and nothing
        # of alice's follows them.
        first_resync = frames.index({"id": "stream", "collection": owned, "result": RESYNC})
        assert frames[first_resync + 1]["result"] == RESYNC
        after = frames[first_resync:]
        assert ids_in(after) == ["b1"], after
        assert set(ids_in(frames[:first_resync])) <= {f"a-burst-{i}" for i in range(20)}
        client.assert_each_answered_once()


async def test_a_refreshed_token_of_the_same_user_keeps_the_stream(
    jwt_server: SyncdProcess, owned: str
) -> None:
    async with websockets.connect(ws_url(jwt_server, f"?access_token={token('carol')}")) as ws:
        client = RxClient(ws)
        await client.subscribe(owned)
        await ws.send(auth_message({"Authorization": f"Bearer {token('carol', ttl=600)}"}))
        http_push(jwt_server, owned, doc("c1"), token=token("carol"))
        assert ids_in([await client.stream_frame(owned)]) == ["c1"]  # no RESYNC first
        await client.quiet()
        assert client.stream == []
