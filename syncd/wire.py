"""JSON bodies spliced from stored JSON text, without decoding it. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

RESYNC = '"RESYNC"'


def json_array(items: Iterable[str]) -> bytes:
    """A JSON array spliced from JSON texts."""
    return b"[" + ",".join(items).encode() + b"]"


def page_body(documents: list[str], checkpoint: dict[str, Any] | None) -> bytes:
    """``{"documents": [...], "checkpoint": ...}``: a pull answer and a stream frame alike."""
    return (
        b'{"documents":'
        + json_array(documents)
        + b',"checkpoint":'
        + orjson.dumps(checkpoint)
        + b"}"
    )
