"""Reaching the configured PostgreSQL at start-up.

A database that is not up yet (compose and Kubernetes start everything at once) is waited for,
with backoff, up to ``SYNCD_DATABASE_WAIT_SECONDS``; one that answers but refuses (wrong
password, no such database) will not change its mind, so it is reported at once. Either way the
outcome is a one-line ``StartupError`` naming SYNCD_DATABASE_URL, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import asyncpg

from syncd.db.urls import asyncpg_dsn
from syncd.startup import StartupError, describe_url

log = logging.getLogger("syncd")

FIRST_RETRY_SECONDS = 0.25
MAX_RETRY_SECONDS = 5.0
# One attempt against a host that drops packets must not use up the whole wait.
ATTEMPT_TIMEOUT_SECONDS = 10.0
FIRST_ATTEMPT_TIMEOUT_SECONDS = 3.0
# While waiting, say so at most this often.
LOG_EVERY_SECONDS = 10.0

_HOST_FIX = ("check the host and port in SYNCD_DATABASE_URL and that PostgreSQL is running "
             "there")


async def reach(url: str, wait_seconds: float = 0.0) -> None:
    """Return once the database accepts a connection; ``StartupError`` when it refuses, or
    when it still does not answer after ``wait_seconds``."""
    started = time.monotonic()
    deadline = started + wait_seconds
    delay = FIRST_RETRY_SECONDS
    logged = float("-inf")
    while True:
        timeout = max(1.0, min(ATTEMPT_TIMEOUT_SECONDS, deadline - time.monotonic()))
        try:
            conn = await asyncpg.connect(asyncpg_dsn(url), timeout=timeout)
        except Exception as exc:
            reason = _not_up_yet(exc)
            if reason is None:
                raise StartupError(refusal(url, exc)) from None
            now = time.monotonic()
            if now >= deadline:
                raise StartupError(_gave_up(url, reason, wait_seconds)) from None
            if now - logged >= LOG_EVERY_SECONDS:
                logged = now
                log.warning("waiting for the database at %s (%s); giving up in %.0f s "
                            "(SYNCD_DATABASE_WAIT_SECONDS)", describe_url(url), reason,
                            deadline - now)
            await asyncio.sleep(min(delay, deadline - now))
            delay = min(delay * 2, MAX_RETRY_SECONDS)
            continue
        await conn.close()
        if time.monotonic() - started > FIRST_RETRY_SECONDS:
            log.info("the database at %s is up", describe_url(url))
        return


async def answers(url: str) -> bool:
    """One attempt: True when the database accepts a connection, False when it is not up
    (yet); ``StartupError`` when it refuses."""
    try:
        # Short: until it ends, nothing answers the probes; a slow database is waited for next.
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=FIRST_ATTEMPT_TIMEOUT_SECONDS)
    except Exception as exc:
        if _not_up_yet(exc) is None:
            raise StartupError(refusal(url, exc)) from None
        return False
    await conn.close()
    return True


def _not_up_yet(exc: Exception) -> str | None:
    """Why the database did not answer, when waiting may help; None when it refused."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve its host name: {exc.strerror}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, asyncpg.CannotConnectNowError):
        return "it is starting up or shutting down"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return "too many connections"
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError):
        return "the connection was closed while it was being made"
    return None


def refusal(url: str, exc: BaseException) -> str:
    """One line for a database that answered and refused (or an error of the URL itself)."""
    where = f"cannot use the database in SYNCD_DATABASE_URL ({describe_url(url)})"
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return f"{where}: {exc}; fix the user or password in SYNCD_DATABASE_URL"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return (f"{where}: {exc}; fix the user in SYNCD_DATABASE_URL, or let it connect in the "
                "server's pg_hba.conf")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return (f"{where}: {exc}; create it (CREATE DATABASE) or fix the database name in "
                "SYNCD_DATABASE_URL")
    reason = _not_up_yet(exc) if isinstance(exc, Exception) else None
    if reason is not None:
        return f"{where}: {reason}; {_HOST_FIX}"
    return f"{where}: {exc or type(exc).__name__}; check SYNCD_DATABASE_URL"


def _gave_up(url: str, reason: str, wait_seconds: float) -> str:
    if wait_seconds <= 0:
        return f"cannot reach the database in SYNCD_DATABASE_URL ({describe_url(url)}): " \
               f"{reason}; {_HOST_FIX}"
    return (f"the database in SYNCD_DATABASE_URL ({describe_url(url)}) did not answer within "
            f"{wait_seconds:g} s (SYNCD_DATABASE_WAIT_SECONDS): {reason}; {_HOST_FIX}, or "
            "allow it longer with SYNCD_DATABASE_WAIT_SECONDS")


def reach_sync(url: str, wait_seconds: float = 0.0) -> None:
    asyncio.run(reach(url, wait_seconds))
