"""``GET /metrics``: syncd's metrics (syncd/metrics.py) in Prometheus's text format.

With several workers (``PROMETHEUS_MULTIPROC_DIR``) whichever worker answers sums every worker's
values. The database gauges describe the cluster, not a worker, so they are asked of PostgreSQL
when scraped and never stored per process.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import psutil  # type: ignore[import-untyped]
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from syncd import metrics as m
from syncd.db.store import DocumentStore
from syncd.exceptions import SyncdError
from syncd.web.responses import DATABASE_UNAVAILABLE


class _Database(Collector):
    """The gauges read from PostgreSQL for this scrape."""

    def __init__(self, oldest: float | None) -> None:
        self._oldest = oldest

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "syncd_database_up", "1 when PostgreSQL answered this scrape, else 0.",
            value=0 if self._oldest is None else 1)
        if self._oldest is not None:
            yield GaugeMetricFamily(
                "syncd_oldest_transaction_age_seconds",
                "Age of the oldest transaction holding an xid in the cluster (running or "
                "prepared); pulls and streams serve only changes below it, so this is how stale "
                "they can get.", value=self._oldest)


async def metrics(request: Request) -> Response:
    store: DocumentStore = request.app.state.store
    try:
        oldest: float | None = await store.oldest_transaction_age()
    except (SyncdError, *DATABASE_UNAVAILABLE):
        oldest = None
    shared = m.multiprocess_dir()
    if shared is None:
        registry = m.REGISTRY
        body = generate_latest(registry) + generate_latest(_registry_of(_Database(oldest)))
    else:
        _forget_dead_workers(shared)
        registry = _registry_of(_Database(oldest))
        MultiProcessCollector(registry, path=shared)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _registry_of(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return registry


def _forget_dead_workers(shared: str) -> None:
    """Drop the live gauges of workers that are gone (uvicorn replaces a worker that died):
    their streams and connections went with them. Their counters stay, so totals never fall."""
    for path in glob.glob(os.path.join(shared, "gauge_live*_*.db")):
        pid = os.path.basename(path)[:-3].rsplit("_", 1)[-1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            mark_process_dead(int(pid), shared)  # type: ignore[no-untyped-call]

