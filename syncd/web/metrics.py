"""``GET /metrics``: a few gauges in Prometheus's text format, computed when scraped.

Each uvicorn worker answers for itself (its own subscribers); the database gauges are the
cluster's, whichever worker answers.
"""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import Response

from syncd.db.store import DocumentStore
from syncd.exceptions import SyncdError
from syncd.hub import Hub
from syncd.web.responses import DATABASE_UNAVAILABLE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: Request) -> Response:
    store: DocumentStore = request.app.state.store
    hub: Hub = request.app.state.hub
    try:
        oldest: float | None = await store.oldest_transaction_age()
    except (SyncdError, *DATABASE_UNAVAILABLE):
        oldest = None
    worker = f'{{pid="{os.getpid()}"}}'
    lines = [
        *_gauge("syncd_database_up", "1 when PostgreSQL answered this scrape, else 0.",
                "", 0 if oldest is None else 1),
        *_gauge("syncd_stream_subscribers", "Live streams open on this worker (every transport).",
                worker, hub.subscriber_count),
    ]
    if oldest is not None:
        lines += _gauge(
            "syncd_oldest_transaction_age_seconds",
            "Age of the oldest transaction holding an xid in the cluster (running or prepared); "
            "pulls and streams serve only changes below it, so this is how stale they can get.",
            "", oldest)
    return Response("\n".join(lines) + "\n", media_type=CONTENT_TYPE)


def _gauge(name: str, help_text: str, labels: str, value: float) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{labels} {value}"]
