"""Wake-ups between nodes: batched ``NOTIFY`` outside write transactions, and ``LISTEN``.

``NOTIFY`` inside a write transaction makes every commit queue on one cluster-wide lock. Here a
node collects the collections it wrote to and sends one notification per interval from its own
connection, after the writes committed; other nodes wake their feeds for those collections.
Losing a notification costs latency, never data: feeds also poll (see ``hub.py``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import asyncpg

from syncd.db.urls import asyncpg_dsn

CHANNEL = "syncd_changes"
MAX_PAYLOAD = 7900  # PostgreSQL's limit is 8000 bytes

log = logging.getLogger("syncd.signals")


class Signals:
    def __init__(
        self, database_url: str, node: str, on_remote: Callable[[set[uuid.UUID]], None],
        *, interval: float,
    ) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._node = node
        self._on_remote = on_remote
        self._interval = interval
        self._pending: set[uuid.UUID] = set()
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="syncd-signals")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def committed(self, collection_id: uuid.UUID) -> None:
        """Tell the other nodes, with the next batch, that this collection changed."""
        self._pending.add(collection_id)

    async def _run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, server_settings={
                    "application_name": "syncd-signals",
                    # A wake-up that a crash loses costs latency only (the head poll finds the
                    # rows), so its commit need not wait for a WAL flush: measured 5-8 % of the
                    # push CPU with 8 writers otherwise.
                    "synchronous_commit": "off",
                })
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cannot reach PostgreSQL for wake-ups (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            try:
                await conn.add_listener(CHANNEL, self._received)
                self.connected.set()
                loop = asyncio.get_running_loop()
                tick = loop.time()
                while not conn.is_closed():
                    # A fixed rate: the time a flush takes (a commit) is not added to the wait.
                    tick = max(tick + self._interval, loop.time())
                    await asyncio.sleep(tick - loop.time())
                    await self._flush(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("wake-up connection lost (%s); reconnecting", exc)
            finally:
                self.connected.clear()
                if not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(0.2)

    async def _flush(self, conn: asyncpg.Connection) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, set()
        for payload in _payloads(self._node, pending):
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    def _received(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        node, _, ids = payload.partition(":")
        if node == self._node:
            return  # this node woke its own feeds when it committed
        collections = set()
        for text in ids.split(","):
            try:
                collections.add(uuid.UUID(hex=text))
            except ValueError:
                log.warning("ignoring malformed wake-up payload %r", payload[:100])
                return
        self._on_remote(collections)


def _payloads(node: str, collections: set[uuid.UUID]) -> list[str]:
    payloads: list[str] = []
    current: list[str] = []
    size = len(node) + 1
    for cid in collections:
        if current and size + 33 > MAX_PAYLOAD:
            payloads.append(f"{node}:{','.join(current)}")
            current, size = [], len(node) + 1
        current.append(cid.hex)
        size += 33
    if current:
        payloads.append(f"{node}:{','.join(current)}")
    return payloads
