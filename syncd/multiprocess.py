"""Where the workers of ``syncd serve --workers N`` share their metrics.

prometheus-client decides between one process and many when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``; so this module must not import it (``syncd serve`` sets the variable
before uvicorn starts the workers, which inherit it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def metrics_directory(workers: int) -> Iterator[str | None]:
    """A private, empty directory for the workers' metric files while the block runs (removed
    afterwards), or None for a single worker, which keeps its metrics in memory.

    Always a fresh one: files left by another run (or another server) would be added to this
    one's counters."""
    previous = os.environ.pop(ENV, None)
    path = tempfile.mkdtemp(prefix="syncd-metrics-") if workers > 1 else None
    if path is not None:
        os.environ[ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(ENV, None)
        if previous is not None:
            os.environ[ENV] = previous
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
