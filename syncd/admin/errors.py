"""The most recent error answers of one node, as a small bounded ring for the admin page."""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

# Distinct (status, code, route) kept per node; the least recently seen one goes first.
RING_SIZE = 20


class ErrorRing:
    """Counts error answers by (status, code, route), keeping the ``size`` most recent kinds.

    Labels are bounded like the metrics' (route templates, error codes), so a flood of one kind
    of error is one entry with a large count and never pushes other kinds out."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[int, str, str], tuple[int, float]] = OrderedDict()

    def record(self, status: int, code: str | None, route: str) -> None:
        key = (status, code or "", route)
        count, _ = self._entries.pop(key, (0, 0.0))
        self._entries[key] = (count + 1, time.time())
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def snapshot(self) -> list[dict[str, Any]]:
        """The entries, most recent first, as the heartbeat publishes them."""
        return [
            {"status": status, "code": code, "route": route, "count": count,
             "last_at": datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")}
            for (status, code, route), (count, at) in reversed(self._entries.items())
        ]
