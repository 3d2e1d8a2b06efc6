"""Each node's heartbeat: its counts, written into ``syncd_nodes`` every few seconds.

The counts come from where they are already kept: documents pushed and pulled and conflicts from
the Prometheus counters (syncd/metrics.py; this process's own values, also with ``--workers``,
where each worker is a node), open streams per way in from the hub, errors from the ring the
request middleware fills.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from prometheus_client import Counter

from syncd import __version__, metrics
from syncd.admin.errors import ErrorRing
from syncd.db import nodes
from syncd.db.store import DocumentStore
from syncd.hub import Hub

log = logging.getLogger("syncd.admin")

WAYS = ("native", "rxdb-server", "rxdb-ws")


class Heartbeat:
    def __init__(
        self, store: DocumentStore, hub: Hub, errors: ErrorRing, *, node_id: str, host: str,
        port: int, interval: float,
    ) -> None:
        self._store, self._hub, self._errors = store, hub, errors
        self.node_id = node_id
        self._host, self._port, self._interval = host, port, interval
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="syncd-heartbeat")

    async def stop(self) -> None:
        """Stop beating and delete this node's row, so that it leaves the page at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await nodes.forget(self._store, self.node_id)
        except Exception as exc:  # the row ages out instead
            log.warning("could not remove this node from syncd_nodes: %s", exc)

    def beat(self) -> nodes.Beat:
        ways = self._hub.ways
        return nodes.Beat(
            node_id=self.node_id, hostname=socket.gethostname(), host=self._host,
            port=self._port, pid=os.getpid(), version=__version__,
            heartbeat_seconds=self._interval,
            subscribers={way: ways.get(way, 0) for way in WAYS},
            pushed=_total(metrics.DOCUMENTS_PUSHED), pulled=_total(metrics.DOCUMENTS_PULLED),
            conflicts=_total(metrics.CONFLICTS), errors=self._errors.snapshot(),
        )

    async def _run(self) -> None:
        while True:
            try:
                await nodes.beat(self._store, self.beat())
            except Exception as exc:  # the database is away: keep serving, try again
                if not self._failing:
                    log.warning("cannot write this node's heartbeat: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("writing this node's heartbeat again")
                self._failing = False
            await asyncio.sleep(self._interval)


def _total(counter: Counter) -> int:
    """A counter's value summed over its labels (this process's own, in multiprocess mode)."""
    return int(sum(
        sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    ))
