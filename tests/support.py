"""Test support: real PostgreSQL databases and real syncd (uvicorn) processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from syncd.db import migrate
from syncd.db.urls import asyncpg_dsn

TEST_DATABASE_ENV = "SYNCD_TEST_DATABASE_URL"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """Where test databases are made: ``SYNCD_TEST_DATABASE_URL`` or an embedded PostgreSQL."""

    def __init__(self) -> None:
        external = os.environ.get(TEST_DATABASE_ENV)
        if external:
            self.admin_url = external
            self.kind = "external"
        else:
            from syncd.db import embedded

            self._data_dir = Path(tempfile.mkdtemp(prefix="syncd-test-pg-"))
            embedded_url = embedded.start(self._data_dir)
            self.admin_url = embedded_url.replace(f"/{embedded.DATABASE}?", "/postgres?")
            self.kind = "embedded"

    def url_for(self, database: str) -> str:
        scheme, _, rest = self.admin_url.partition("://")
        authority, _, tail = rest.partition("/")
        _, _, query = tail.partition("?")
        return f"{scheme}://{authority}/{database}" + (f"?{query}" if query else "")

    def create_database(self, *, migrated: bool = True) -> str:
        name = f"syncd_test_{uuid.uuid4().hex[:12]}"
        run(self._admin(f'CREATE DATABASE "{name}"'))
        url = self.url_for(name)
        if migrated:
            migrate.upgrade(url)
        return url

    def drop_database(self, url: str) -> None:
        name = url.split("?")[0].rsplit("/", 1)[1]
        run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


def run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


class SyncdProcess:
    """One real ``uvicorn syncd.web.app:create_app`` process on 127.0.0.1.

    ``port`` picks the port (default: a free one); a new process on the port of a stopped one is
    what a restart looks like to clients.
    """

    def __init__(
        self, database_url: str, env: Mapping[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = free_port() if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="syncd-test-", suffix=".log")[1])
        environment = {
            **os.environ, "SYNCD_DATABASE_URL": database_url, "SYNCD_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syncd", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"syncd exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"syncd did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
