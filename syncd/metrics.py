"""The Prometheus metrics of a syncd worker, defined in one place.

Prometheus registries are module-level by convention: code that counts something imports the
metric it increments from here and never reads it back. ``GET /metrics`` (syncd/web/metrics.py)
renders them.

With ``syncd serve --workers N`` (N > 1) each worker is its own process: ``syncd serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a private temporary directory before the workers start, every
worker writes its values there (prometheus-client's multiprocess mode, chosen when this module is
first imported), and whichever worker answers a scrape sums them. Gauges therefore name how
workers combine (``multiprocess_mode``): ``livesum`` adds up the workers that are alive.

Labels stay bounded: HTTP requests are labelled by route *template* (never the raw path) and way
in; documents and conflicts by collection name, which only ever takes registered names (the
service counts after the collection was found).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from syncd.multiprocess import ENV

MULTIPROCESS_ENV = ENV  # set by `syncd serve` (syncd/multiprocess.py)

# `_created` samples double the series of every counter and histogram for a value nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Only syncd's metrics, whether one process or many (no default process/platform collectors, so
# a scrape shows the same names either way).
REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds; from a fast pull (~1 ms) to the statement timeout's neighbourhood.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)

HTTP_REQUESTS = Counter(
    "syncd_http_requests", "HTTP requests answered, by way in, route template, method and status.",
    ("way", "route", "method", "status"), registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "syncd_http_request_duration_seconds",
    "Time from receiving an HTTP request to sending its response headers (for a Server-Sent "
    "Events stream: until the stream opened).",
    ("way", "route", "method"), buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
WS_MESSAGES = Counter(
    "syncd_rxdb_ws_messages",
    "Requests received on RxDB's websocket protocol, by method and outcome (ok or error).",
    ("method", "outcome"), registry=REGISTRY,
)
WS_DURATION = Histogram(
    "syncd_rxdb_ws_message_duration_seconds",
    "Time to answer a masterChangesSince or masterWrite request on RxDB's websocket protocol.",
    ("method",), buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
DOCUMENTS_PULLED = Counter(
    "syncd_documents_pulled", "Documents returned by pulls (every way in).",
    ("collection",), registry=REGISTRY,
)
DOCUMENTS_PUSHED = Counter(
    "syncd_documents_pushed",
    "Rows received in valid pushes (every way in); written = pushed - conflicts.",
    ("collection",), registry=REGISTRY,
)
CONFLICTS = Counter(
    "syncd_push_conflicts", "Pushed rows refused as conflicts (answered with the master state).",
    ("collection",), registry=REGISTRY,
)
STREAM_SUBSCRIBERS = Gauge(
    "syncd_stream_subscribers", "Live streams open (every transport), summed over workers.",
    registry=REGISTRY, multiprocess_mode="livesum",
)
REPLICA_LAG = Gauge(
    "syncd_replica_lag_seconds",
    "Replay lag of each replica (SYNCD_DATABASE_REPLICA_URLS) at its last check, measured by the "
    "node against the primary's WAL position; the largest over workers.",
    ("replica",), registry=REGISTRY, multiprocess_mode="livemax",
)
REPLICA_IN_USE = Gauge(
    "syncd_replica_in_use",
    "1 while the replica serves reads (answers, is a standby of this cluster, lag within "
    "SYNCD_REPLICA_MAX_LAG_MS), 0 while reads go to the primary instead; the least over workers.",
    ("replica",), registry=REGISTRY, multiprocess_mode="livemin",
)
REPLICA_READS = Counter(
    "syncd_replica_reads",
    "Reads (pull pages, stream reads, head polls) served by each replica; 'primary' for those "
    "served by the primary while replicas are configured.",
    ("replica",), registry=REGISTRY,
)
STREAM_FEEDS = Gauge(
    "syncd_stream_feeds",
    "Change feeds read by the nodes: one per (collection, partition, filter) with live streams, "
    "however many streams share it; summed over workers.",
    ("filtered",), registry=REGISTRY, multiprocess_mode="livesum",
)
STREAM_FEED_READS = Counter(
    "syncd_stream_feed_reads",
    "Reads of the database by change feeds (each serves every stream of its feed).",
    ("filtered",), registry=REGISTRY,
)
STREAM_FRAMES_SENT = Counter(
    "syncd_stream_frames_sent",
    "Change frames handed to live streams (one per stream per frame).", registry=REGISTRY,
)
STREAM_RESYNCS = Counter(
    "syncd_stream_resyncs",
    "RESYNCs sent because a stream lost continuity: overflow (a slow reader), echo_lag (not "
    "sent a push's echo in time), database_back (PostgreSQL was unavailable), pull_failed.",
    ("reason",), registry=REGISTRY,
)
FEED_LAG = Histogram(
    "syncd_stream_feed_lag_seconds",
    "For each push on this node whose collection it streams: from the push's commit returning "
    "to the frame carrying its changes being offered to the streams.",
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
POOL_IN_USE = Gauge(
    "syncd_db_pool_connections_in_use",
    "Database connections checked out of the workers' pools, summed over workers.",
    registry=REGISTRY, multiprocess_mode="livesum",
)
POOL_MAX = Gauge(
    "syncd_db_pool_connections_max",
    "Largest size of the workers' database pools (SYNCD_DB_POOL_MAX), summed over workers.",
    registry=REGISTRY, multiprocess_mode="livesum",
)


def multiprocess_dir() -> str | None:
    """The directory the workers share their values in, or None in single-process mode."""
    return os.environ.get(MULTIPROCESS_ENV) or None
