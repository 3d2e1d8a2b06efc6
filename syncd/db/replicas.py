"""Streaming replicas: where pulls, stream reads and head polls go when replicas are configured
(``SYNCD_DATABASE_REPLICA_URLS``; docs/ordering.md "On a replica", docs/scaling.md).

A replica is in rotation while it answers, is still a standby of the primary's cluster (same
system identifier, in recovery) and its replay lag is at most ``SYNCD_REPLICA_MAX_LAG_MS``. The
lag is measured by the node itself, without trusting clocks: it samples the primary's WAL
position on every check, and a replica that has replayed up to position R lags by the age of the
oldest sample beyond R. Reads pick the in-rotation replicas in turn; a read that fails on a
replica (connection lost, recovery conflict) is retried on the primary at once and the replica
leaves the rotation until its next good check.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import asyncpg

from syncd import metrics
from syncd.db.urls import asyncpg_dsn

log = logging.getLogger("syncd.replicas")

PRIMARY_LSN_SQL = "SELECT pg_current_wal_lsn()::text"
REPLICA_STATE_SQL = """
SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
       (SELECT to_hex(system_identifier) FROM pg_control_system())
"""

# A read on a replica that fails with these is retried on the primary: the replica went away,
# a recovery conflict cancelled the statement (class 40 on a standby), or it has not replayed a
# migration yet (any error of the server: the primary answers the same read as well or better).
REPLICA_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class ReplicaBusy(Exception):
    """Every connection of the replica's pool is in use: not a failure of the replica."""


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset: nothing to undo (reads set no session state); asyncpg's default reset would
    cost a round trip per read."""


def lsn_number(text: str) -> int:
    """``'16/B374D848'`` as one integer (PostgreSQL's ``pg_lsn``)."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def label_of(url: str) -> str:
    """The replica's name in logs and metrics: host (or socket directory), port and database,
    never credentials."""
    parts = urlsplit(url)
    host = parts.hostname or parse_qs(parts.query).get("host", [""])[0]
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"


@dataclass
class Replica:
    url: str
    label: str
    pool: asyncpg.Pool | None = None
    lag: float | None = None  # seconds of replay lag at the last check; None: unknown
    in_use: bool = False
    problem: str | None = None  # why it is out of rotation, for the log (said once)


@dataclass
class LagClock:
    """The primary's WAL position over time: how old a replica's replay position is."""

    keep_seconds: float
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def sample(self, at: float, lsn: int) -> None:
        if not self.samples or lsn > self.samples[-1][1]:
            self.samples.append((at, lsn))
        while len(self.samples) > 1 and self.samples[1][0] < at - self.keep_seconds:
            self.samples.popleft()

    def lag(self, now: float, replayed: int) -> float:
        """Seconds since the primary first had WAL the replica has not replayed (0: none)."""
        for at, lsn in self.samples:
            if lsn > replayed:
                return max(0.0, now - at)
        return 0.0


class ReplicaSet:
    def __init__(
        self, urls: Sequence[str], *, epoch: str, max_lag_seconds: float,
        check_seconds: float, pool_max: int, statement_timeout_ms: int,
    ) -> None:
        self.replicas = [Replica(url, label_of(url)) for url in urls]
        self._epoch = epoch
        self._max_lag = max_lag_seconds
        self._check_seconds = check_seconds
        self._pool_max = pool_max
        self._statement_timeout_ms = statement_timeout_ms
        self._clock = LagClock(keep_seconds=max(60.0, 10 * max_lag_seconds))
        self._turn = itertools.count()
        self._monitor: asyncio.Task[None] | None = None

    async def start(self, primary: asyncpg.Pool) -> None:
        for replica in self.replicas:
            # min_size=0: a replica that is down at start does not stop the node from serving.
            replica.pool = await asyncpg.create_pool(
                asyncpg_dsn(replica.url), min_size=0, max_size=self._pool_max,
                server_settings={"statement_timeout": str(self._statement_timeout_ms),
                                 "application_name": "syncd"},
                reset=_keep_session,
            )
            metrics.REPLICA_IN_USE.labels(replica.label).set(0)
        await self.check(primary)
        self._monitor = asyncio.create_task(self._watch(primary), name="syncd-replicas")

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
        for replica in self.replicas:
            if replica.pool is not None:
                await replica.pool.close()

    def pick(self) -> Replica | None:
        """The next replica in rotation, or None (read from the primary)."""
        usable = [r for r in self.replicas if r.in_use]
        if not usable:
            return None
        return usable[next(self._turn) % len(usable)]

    @contextlib.asynccontextmanager
    async def connection(self, replica: Replica) -> AsyncIterator[asyncpg.Connection]:
        assert replica.pool is not None
        pool = replica.pool
        if pool.get_size() >= pool.get_max_size() and pool.get_idle_size() == 0:
            raise ReplicaBusy
        conn = await pool.acquire(timeout=1.0)
        try:
            yield conn
        finally:
            await replica.pool.release(conn)

    def failed(self, replica: Replica, exc: BaseException) -> None:
        """A read failed on ``replica``: out of rotation until a check finds it good again."""
        self._out(replica, f"a read failed ({type(exc).__name__}: {exc})")

    async def check(self, primary: asyncpg.Pool) -> None:
        """Sample the primary's WAL position, then measure every replica against it."""
        try:
            async with primary.acquire(timeout=1.0) as conn:
                lsn = lsn_number(await conn.fetchval(PRIMARY_LSN_SQL))
        except Exception as exc:  # the primary's own trouble is reported elsewhere
            log.debug("cannot sample the primary's WAL position: %s", exc)
            return
        now = time.monotonic()
        self._clock.sample(now, lsn)
        await asyncio.gather(*(self._check(replica, now) for replica in self.replicas))

    async def _check(self, replica: Replica, now: float) -> None:
        assert replica.pool is not None
        try:
            async with self.connection(replica) as conn:
                recovering, replayed, epoch = await conn.fetchrow(REPLICA_STATE_SQL)
        except Exception as exc:
            self._out(replica, f"it does not answer ({type(exc).__name__}: {exc})")
            return
        if epoch != self._epoch:
            self._out(replica, "it is not a replica of the primary's cluster (another system "
                               "identifier); fix SYNCD_DATABASE_REPLICA_URLS")
            return
        if not recovering or replayed is None:
            self._out(replica, "it is not a standby in recovery (promoted?)")
            return
        replica.lag = self._clock.lag(now, lsn_number(replayed))
        metrics.REPLICA_LAG.labels(replica.label).set(replica.lag)
        if replica.lag > self._max_lag:
            self._out(replica, f"its replay lag is {replica.lag * 1000:.0f} ms, above "
                               f"SYNCD_REPLICA_MAX_LAG_MS ({self._max_lag * 1000:.0f})")
            return
        if not replica.in_use:
            log.info("replica %s in rotation (replay lag %.0f ms)", replica.label,
                     replica.lag * 1000)
        replica.in_use, replica.problem = True, None
        metrics.REPLICA_IN_USE.labels(replica.label).set(1)

    def _out(self, replica: Replica, problem: str) -> None:
        if replica.in_use or replica.problem is None:
            log.warning("replica %s out of rotation: %s; reading from the primary",
                        replica.label, problem)
        replica.in_use, replica.problem = False, problem
        metrics.REPLICA_IN_USE.labels(replica.label).set(0)

    async def _watch(self, primary: asyncpg.Pool) -> None:
        while True:
            await asyncio.sleep(self._check_seconds)
            await self.check(primary)
