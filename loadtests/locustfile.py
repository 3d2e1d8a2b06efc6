"""Locust load profiles for syncd's native API: push, pull (initial sync), stream subscribers.

The server must be a running ``syncd serve`` on loopback (``--host http://127.0.0.1:PORT``; any
other host is refused) with the collection ``benchdocs`` registered from
``loadtests/bench_schema.json`` (the documents are the ~1 KB ones of ``loadtests/documents.py``)::

    export SYNCD_DATA_DIR=$(mktemp -d /tmp/syncd-locust-XXXXXX)   # embedded PostgreSQL
    .venv/bin/syncd collections add benchdocs --schema loadtests/bench_schema.json
    .venv/bin/syncd serve --port 8089 & SYNCD_PID=$!
    # … the runs below, then: kill $SYNCD_PID; wait $SYNCD_PID; rm -rf "$SYNCD_DATA_DIR"

``loadtests/locust_profiles.sh`` does all of it (server, collections, the four profiles below,
a summary table with the CPU each side used, teardown).

User classes (pick some by name on the command line; with none named, all three run in the
mixed proportions of their weights, 25 : 2 : 1, so ``-u 56`` = 50 stream + 4 push + 2 pull):

* ``PushUser``: ``POST /api/v1/sync/benchdocs`` batches of ``--batch-size`` (100) new documents,
  expecting ``[]``; every ``--update-every`` (10) pushes, an update round instead: 10 documents of
  its latest batch with the right ``assumedMasterState`` (expects ``[]``), then one deliberate
  conflict with a stale one (expects the stored document back). ``--push-rate`` paces each push
  user to that many pushes a second (0: as fast as it can);
* ``PullUser``: an initial sync, ``GET /api/v1/sync/benchdocs?checkpoint=…&limit=1000`` from no
  checkpoint until an empty page (at most ``--max-pages``), then again; ``pull sync`` reports
  the whole sync;
* ``StreamUser``: a websocket subscriber on ``/api/v1/sync/benchdocs/stream``. ``stream latency``
  is, per frame, its receipt - the ``updatedAt`` of its oldest document (set by the pusher just
  before it sent the push; one machine, one clock). RESYNCs are counted (``RESYNC first`` is the
  expected one on connecting, ``RESYNC later`` any other). When the test stops, every subscriber
  is checked against the pushes made by the push users of the same process: each document
  written between its connecting and 5 s before its end must have reached it (the latest
  version, at least); the result is logged, and a miss makes locust exit with code 1 (with
  ``--processes``, each worker checks and logs its own users; the exit code stays the master's).

Headless runs (each bounded by ``--run-time``; ``--csv`` writes the tables)::

    L=".venv/bin/locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8089"
    $L -u 4 -r 4 --run-time 60s --csv /tmp/lc-push PushUser
    $L -u 2 -r 2 --run-time 60s --csv /tmp/lc-pull --seed-docs 100000 PullUser
    $L -u 54 -r 27 --run-time 60s --csv /tmp/lc-stream --push-rate 2 StreamUser PushUser
    $L -u 56 -r 28 --run-time 60s --csv /tmp/lc-mixed --push-rate 2 --seed-docs 100000

``--seed-docs N`` first pushes N documents (ids ``seed-…``; skipped when the last of them is
there already) so that pull users have a collection to sync. Seeding happens inside
``--run-time`` (locust starts its clock first): the statistics are reset after it, so rates are
right, but the measured window is shorter by the seeding time it logs. Locust runs on one
core; ``--processes 2`` spreads the users over two worker processes when it saturates.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from documents import document, insert_rows
from locust import FastHttpUser, User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

log = logging.getLogger("locustfile")

API = "/api/v1/sync"
JSON_HEADERS = {"Content-Type": "application/json"}
RESYNC = b'"RESYNC"'
UPDATES_PER_ROUND = 10
DELIVERY_GRACE_MS = 5000  # writes acknowledged this close to a subscriber's end are not checked
SEED_BATCH = 500
SETUP_HINT = (
    "register it first, against the same database as the server: SYNCD_DATA_DIR=<its data dir> "
    "(or SYNCD_DATABASE_URL=…) .venv/bin/syncd collections add {collection} "
    "--schema loadtests/bench_schema.json"
)


# --- options ----------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("syncd load profiles (loadtests/locustfile.py)")
    group.add_argument("--collection", default="benchdocs", help="collection to load")
    group.add_argument("--batch-size", type=int, default=100, help="documents per push")
    group.add_argument("--update-every", type=int, default=10,
                       help="every Nth push of a push user is an update round (0: never)")
    group.add_argument("--push-rate", type=float, default=0.0,
                       help="pushes a second per push user (0: unpaced)")
    group.add_argument("--pull-limit", type=int, default=1000, help="documents per pull page")
    group.add_argument("--max-pages", type=int, default=1000,
                       help="pages per initial sync at most (bounds a sync that never ends)")
    group.add_argument("--seed-docs", type=int, default=0,
                       help="push this many documents before the test (for pull users)")


@dataclass(frozen=True, slots=True)
class Options:
    collection: str = "benchdocs"
    batch_size: int = 100
    update_every: int = 10
    push_rate: float = 0.0
    pull_limit: int = 1000
    max_pages: int = 1000
    seed_docs: int = 0


def options(environment: Environment) -> Options:
    """The profile's options; defaults when locust runs as a library without them."""
    parsed = environment.parsed_options
    if parsed is None:
        return Options()
    return Options(parsed.collection, parsed.batch_size, parsed.update_every, parsed.push_rate,
                   parsed.pull_limit, parsed.max_pages, parsed.seed_docs)


# --- loopback only ------------------------------------------------------------------------------


def is_loopback(host: str | None) -> bool:
    name = urlsplit(host or "").hostname
    if name is None:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refuse_unless_loopback(host: str | None) -> None:
    if not is_loopback(host):
        raise SystemExit(
            f"locustfile: refusing --host {host!r}: these profiles only load a syncd on loopback "
            "(http://127.0.0.1:PORT, http://localhost:PORT or http://[::1]:PORT)"
        )


@events.init.add_listener  # type: ignore[untyped-decorator]
def _check_host(environment: Environment, **_kwargs: Any) -> None:
    # A host given on the command line is checked before anything is sent; one typed into the
    # web UI is checked again when the test starts.
    if environment.host:
        refuse_unless_loopback(environment.host)


# --- setup: the collection exists, optionally seeded ------------------------------------------


def _http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request outside locust's statistics (setup traffic is not load)."""
    request = urllib.request.Request(url, data=body, method=method, headers=JSON_HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def check_collection(host: str, collection: str) -> None:
    status, body = _http("GET", f"{host}{API}/{collection}?limit=1")
    if status != 200:
        raise SystemExit(
            f"locustfile: collection {collection!r} answers {status} {body[:200]!r}; "
            + SETUP_HINT.format(collection=collection)
        )


def seed(host: str, collection: str, total: int) -> None:
    """Push ``total`` documents ``seed-<n>``, unless the last of them is there already."""
    started, url = time.monotonic(), f"{host}{API}/{collection}"
    # Batches go in order, so the last document stands for a complete earlier seeding; pushing
    # it first costs one document when it is new.
    if _seed_push(url, total - 1, 1):
        log.info("collection %s already seeded with %d documents", collection, total)
        return
    for start in range(0, total - 1, SEED_BATCH):
        _seed_push(url, start, min(SEED_BATCH, total - 1 - start))
    log.info("seeded %d documents in %.1f s", total, time.monotonic() - started)


def _seed_push(url: str, start: int, count: int) -> int:
    """Push seed documents ``start …``; the number of them that were there already."""
    status, body = _http("POST", url, orjson.dumps(insert_rows("seed-", start, count)))
    if status != 200:
        raise SystemExit(f"locustfile: seeding failed: {status} {body[:200]!r}")
    return len(orjson.loads(body))


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _prepare(environment: Environment, **_kwargs: Any) -> None:
    refuse_unless_loopback(environment.host)
    # Workers of a distributed run leave the setup to the master (or the local runner).
    if environment.runner is not None and not _is_worker(environment):
        opts = options(environment)
        host = str(environment.host).rstrip("/")
        check_collection(host, opts.collection)
        if opts.seed_docs > 0:
            seed(host, opts.collection, opts.seed_docs)
            # The run time has been ticking meanwhile, but the statistics start now.
            environment.runner.stats.reset_all()


def _is_worker(environment: Environment) -> bool:
    from locust.runners import WorkerRunner

    return isinstance(environment.runner, WorkerRunner)


# --- what was pushed, for the delivery check (per process) ---------------------------------------


@dataclass(slots=True)
class Write:
    """One acknowledged write of some documents of a batch (bit i = document i)."""

    sent_ms: int
    acked_ms: int
    mask: int


@dataclass(slots=True)
class BatchWrites:
    created: Write | None = None
    updated: Write | None = None  # version 1 of some of its documents


PUSHED: dict[str, BatchWrites] = {}  # batch key -> its writes, from this process's push users


def now_ms() -> int:
    return int(time.time() * 1000)


def doc_id(batch_key: str, index: int) -> str:
    return f"{batch_key}-{index:04d}"


def version_of(doc: dict[str, Any]) -> int:
    """documents.document() writes the version at the end of the title."""
    title = doc.get("title")
    tail = title.rpartition(" ")[2] if isinstance(title, str) else ""
    return int(tail) if tail.isdigit() else -1


# --- push -------------------------------------------------------------------------------------


class PushUser(FastHttpUser):
    """New documents in batches; now and then an update round with one deliberate conflict."""

    weight = 2
    connection_timeout = 10.0
    network_timeout = 60.0
    _tags = count()

    def on_start(self) -> None:
        self.opts = options(self.environment)
        self.path = f"{API}/{self.opts.collection}"
        # Unique across users, processes and runs: ids never collide with another pusher's.
        self.tag = f"u{secrets.token_hex(3)}{next(self._tags)}"
        self.batches = count()
        self.pushes = 0
        self.last_batch: tuple[str, list[dict[str, Any]]] | None = None
        self.next_due = time.monotonic()

    def wait_time(self) -> float:
        if self.opts.push_rate <= 0:
            return 0.0
        # A push slower than the pace is not made up for with a burst afterwards.
        now = time.monotonic()
        self.next_due = max(self.next_due + 1.0 / self.opts.push_rate, now)
        return self.next_due - now

    @task
    def push(self) -> None:
        self.pushes += 1
        every = self.opts.update_every
        if every > 0 and self.pushes % every == 0 and self.last_batch is not None:
            self.update_round(*self.last_batch)
            self.last_batch = None  # each batch is updated once: one version 1 per document
        else:
            self.create_batch()

    def create_batch(self) -> None:
        key = f"{self.tag}-{next(self.batches):07d}"
        docs = [document(doc_id(key, i)) for i in range(self.opts.batch_size)]
        sent = now_ms()
        if self.post([{"newDocumentState": d} for d in docs], f"push batch {len(docs)}") == []:
            PUSHED[key] = BatchWrites(Write(sent, now_ms(), (1 << len(docs)) - 1))
            self.last_batch = (key, docs)

    def update_round(self, key: str, docs: list[dict[str, Any]]) -> None:
        """Version 1 of some documents with the right assumed state, then a stale one."""
        old = docs[:UPDATES_PER_ROUND]
        new = [document(d["id"], version=1) for d in old]
        pairs = zip(old, new, strict=True)
        rows = [{"assumedMasterState": o, "newDocumentState": n} for o, n in pairs]
        sent = now_ms()
        if self.post(rows, f"push update {len(rows)}") != []:
            return
        PUSHED[key].updated = Write(sent, now_ms(), (1 << len(rows)) - 1)
        stale = [{"assumedMasterState": old[0], "newDocumentState": document(old[0]["id"], 2)}]
        self.post(stale, "push conflict", expect=[{**new[0], "_deleted": False}])

    def post(self, rows: list[dict[str, Any]], name: str,
             expect: list[dict[str, Any]] | None = None) -> Any:
        """The push's answer (None when it failed); a failure unless it equals ``expect``."""
        wanted = [] if expect is None else expect
        body = orjson.dumps(rows)
        # locust annotates ``data`` as str, but sends bytes as they are (its docstring says so).
        with self.client.post(self.path, data=body, headers=JSON_HEADERS,  # type: ignore[arg-type]
                              name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.content[:200]!r}")
                return None
            answer = orjson.loads(response.content)
            if answer != wanted:
                response.failure(f"expected {str(wanted)[:100]}, got {str(answer)[:200]}")
            return answer


# --- pull ---------------------------------------------------------------------------------------

_CHECKPOINT_KEY = b',"checkpoint":'


def read_page(body: bytes) -> tuple[int, Any]:
    """``(documents, checkpoint)`` of a pull answer, counted and cut out without decoding the
    documents: the generator must not spend its CPU parsing what it only passes through."""
    head = b'{"documents":['
    cut = body.rfind(_CHECKPOINT_KEY)
    if not body.startswith(head) or cut < 0 or not body.endswith(b"}"):
        page = orjson.loads(body)  # another layout: decode it all
        return len(page["documents"]), page["checkpoint"]
    checkpoint = orjson.loads(body[cut + len(_CHECKPOINT_KEY):-1])
    if body[len(head):len(head) + 1] == b"]":
        return 0, checkpoint
    # Every pulled document carries "_deleted" exactly once (syncd stores it explicitly).
    return body.count(b'"_deleted":'), checkpoint


class PullUser(FastHttpUser):
    """Initial syncs, one after another: every page from no checkpoint to an empty page."""

    weight = 1
    connection_timeout = 10.0
    network_timeout = 60.0

    def on_start(self) -> None:
        self.opts = options(self.environment)

    @task
    def initial_sync(self) -> None:
        started, documents, pages = time.perf_counter(), 0, 0
        checkpoint: Any = None
        error: Exception | None = None
        while error is None:
            if pages >= self.opts.max_pages:
                error = RuntimeError(f"no empty page after {pages} pages (--max-pages)")
                break
            try:
                got, checkpoint = self.pull_page(checkpoint)
            except PullFailed as failed:
                error = failed
                break
            pages += 1
            documents += got
            if got == 0:
                break
        self.environment.events.request.fire(
            request_type="SYNC", name="pull sync", response_length=documents, exception=error,
            response_time=(time.perf_counter() - started) * 1000, context={},
        )

    def pull_page(self, checkpoint: Any) -> tuple[int, Any]:
        query = f"limit={self.opts.pull_limit}"
        if checkpoint is not None:
            query += "&checkpoint=" + quote(orjson.dumps(checkpoint).decode(), safe="")
        with self.client.get(f"{API}/{self.opts.collection}?{query}", catch_response=True,
                             name=f"pull page {self.opts.pull_limit}") as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.content[:200]!r}")
                raise PullFailed(f"pull answered {response.status_code}")
            got, new_checkpoint = read_page(response.content)
            if got and new_checkpoint is None:
                response.failure("a page with documents but no checkpoint")
                raise PullFailed("no checkpoint")
            return got, new_checkpoint


class PullFailed(Exception):
    pass


# --- stream -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Reception:
    """What one subscriber received, for the delivery check."""

    connected_ms: int
    ended_ms: int = 0
    later_resyncs: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # batch key -> documents, any version
    seen_v1: dict[str, int] = field(default_factory=dict)  # batch key -> documents at version 1

    def record(self, docs: list[dict[str, Any]]) -> None:
        # Hot path (every frame of every subscriber): plain string operations, and a batch's
        # documents OR-ed together before they touch the subscriber's maps.
        seen: dict[str, int] = {}
        seen_v1: dict[str, int] = {}
        for doc in docs:
            key, _, index = str(doc.get("id", "")).rpartition("-")
            if key[:1] != "u" or not index.isdigit():
                continue  # not a push user's document (seeded, or someone else's)
            bit = 1 << int(index)
            seen[key] = seen.get(key, 0) | bit
            if version_of(doc) >= 1:
                seen_v1[key] = seen_v1.get(key, 0) | bit
        for mine, got in ((self.seen, seen), (self.seen_v1, seen_v1)):
            for key, mask in got.items():
                mine[key] = mine.get(key, 0) | mask

    def missing(self) -> int:
        """Documents written by this process's pushers in this subscriber's lifetime (less the
        grace at its end) that never reached it."""
        lost = 0
        for key, writes in list(PUSHED.items()):
            for write, seen in ((writes.created, self.seen), (writes.updated, self.seen_v1)):
                if write is not None and self.covers(write):
                    lost += (write.mask & ~seen.get(key, 0)).bit_count()
        return lost

    def covers(self, write: Write) -> bool:
        return (write.sent_ms >= self.connected_ms
                and write.acked_ms <= self.ended_ms - DELIVERY_GRACE_MS)


RECEPTIONS: list[Reception] = []  # this process's subscribers


class StreamUser(User):
    """One websocket subscriber; reports the delivery latency of every frame."""

    weight = 25

    def on_start(self) -> None:
        self.opts = options(self.environment)
        self.closing = ExitStack()
        refuse_unless_loopback(self.host)
        base = str(self.host).rstrip("/").replace("http", "ws", 1)
        self.reception: Reception | None = None
        # Entered as a context manager (websockets ≥ 17.1 deprecates plain connect() calls),
        # left in on_stop.
        with self.measure("WS", "stream connect"):
            self.ws: ClientConnection = self.closing.enter_context(connect(
                f"{base}{API}/{self.opts.collection}/stream", open_timeout=10,
                compression=None, max_size=None, close_timeout=2,
            ))
            first = self.ws.recv(timeout=10, decode=False)
        if first != RESYNC:
            raise RuntimeError(f"the stream's first frame is {first[:100]!r}, not RESYNC")
        self.count("RESYNC first")
        self.reception = Reception(now_ms())
        RECEPTIONS.append(self.reception)

    def on_stop(self) -> None:
        if self.reception is not None:
            self.reception.ended_ms = now_ms()
        self.closing.close()

    @task
    def receive(self) -> None:
        # Bounded: back to locust (which may stop the user) at least every 5 s.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                frame = self.ws.recv(timeout=1, decode=False)
            except TimeoutError:
                continue
            except ConnectionClosed as closed:
                self.count("stream closed", closed)
                raise StopUser() from closed
            self.on_frame(frame)

    def on_frame(self, frame: bytes) -> None:
        received = now_ms()
        if frame == RESYNC:
            assert self.reception is not None
            self.reception.later_resyncs += 1
            self.count("RESYNC later")
            return
        docs: list[dict[str, Any]] = orjson.loads(frame)["documents"]
        assert self.reception is not None
        self.reception.record(docs)
        stamps = [d["updatedAt"] for d in docs if isinstance(d.get("updatedAt"), int)]
        if stamps:
            self.environment.events.request.fire(
                request_type="WS", name="stream latency", response_time=received - min(stamps),
                response_length=len(frame), exception=None, context={},
            )

    def count(self, name: str, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=0, response_length=0,
            exception=exception, context={},
        )

    @contextmanager
    def measure(self, kind: str, name: str) -> Iterator[None]:
        started, error = time.perf_counter(), None
        try:
            yield
        except Exception as exc:
            error = exc
            raise
        finally:
            self.environment.events.request.fire(
                request_type=kind, name=name, response_length=0, exception=error,
                response_time=(time.perf_counter() - started) * 1000, context={},
            )


@events.test_stop.add_listener  # type: ignore[untyped-decorator]
def _check_delivery(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, MasterRunner) or not RECEPTIONS or not PUSHED:
        return
    clean = [r for r in RECEPTIONS if r.later_resyncs == 0]
    lost = sum(r.missing() for r in clean)
    checked = sum(1 for r in clean for w in _writes() if r.covers(w))
    summary = (f"delivery check: {len(clean)} subscribers (+{len(RECEPTIONS) - len(clean)} "
               f"skipped after a later RESYNC) x writes in their lifetime = {checked} "
               f"(subscriber, write) pairs; documents missing: {lost}")
    if lost:
        log.error(summary)
        environment.process_exit_code = 1
    else:
        log.info(summary)


def _writes() -> Iterator[Write]:
    for writes in PUSHED.values():
        yield from (w for w in (writes.created, writes.updated) if w is not None)

