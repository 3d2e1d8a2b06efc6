"""Checkpoints: where a client stands in a collection's change order. Pure; no I/O.

The change order is ``(xid, seq)``: the id of the transaction that wrote the row version, then a
sequence number that orders versions inside one transaction (see docs/ordering.md). On the wire a
checkpoint is the JSON object ``{"id": "<epoch>.<seq>", "lwt": <xid>}``:

* ``lwt`` is a plain integer, below 2**53, so JavaScript parses it exactly (rxdb-server's client
  sends it back through ``parseFloat``);
* ``id`` holds only unreserved URL characters, so a client that does not URL-encode it (the
  rxdb-server 15.22.0 client does not) still sends it back intact;
* ``epoch`` names the PostgreSQL cluster that assigned the xids. A logical dump/restore into a new
  cluster restarts xids lower, so a checkpoint from another epoch is served from the beginning
  rather than silently skipping everything below it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import quote

import orjson

from syncd.exceptions import BadRequest

JS_MAX_SAFE_INTEGER = 2**53 - 1
# A filtered replication's checkpoint adds "~<state>": base64url of its filter state
# (syncd/filters.py, docs/partial-sync.md). Unreserved URL characters only, like the rest.
_ID_PATTERN = re.compile(r"^([0-9a-f]{1,16})\.([0-9]{1,16})(?:~([A-Za-z0-9_-]{1,16384}))?$")


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A point in the change order: every row version with a greater ``(xid, seq)`` is after it."""

    xid: int
    seq: int


ORIGIN = Position(0, 0)


def encode(position: Position, epoch: str, state: str | None = None) -> dict[str, Any]:
    suffix = "" if state is None else f"~{state}"
    return {"id": f"{epoch}.{position.seq}{suffix}", "lwt": position.xid}


def decode(checkpoint: Any, epoch: str) -> Position:
    """The position a client checkpoint stands for; ``None`` (a first pull) is the origin."""
    return decode_with_state(checkpoint, epoch)[0]


def decode_with_state(checkpoint: Any, epoch: str) -> tuple[Position, str | None]:
    """The position and the filter state token (None for an unfiltered checkpoint)."""
    if checkpoint is None:
        return ORIGIN, None
    if not isinstance(checkpoint, dict):
        raise BadRequest(
            "checkpoint must be a JSON object as returned by a previous pull, "
            f"got {type(checkpoint).__name__}",
            code="invalid_checkpoint",
        )
    token, lwt = checkpoint.get("id"), checkpoint.get("lwt")
    if token in (None, "") and (lwt is None or (lwt == 0 and not isinstance(lwt, bool))):
        return ORIGIN, None  # rxdb-server's first pull sends id='' and lwt=0
    match = _ID_PATTERN.match(token) if isinstance(token, str) else None
    if match is None or not _is_whole_number(lwt):
        raise BadRequest(
            'checkpoint must be {"id": "<epoch>.<seq>", "lwt": <integer>} as returned by a '
            f"previous pull; got {_short(checkpoint)}",
            code="invalid_checkpoint",
        )
    if match.group(1) != epoch:
        return ORIGIN, None  # written by another cluster: replay everything rather than skip
    return Position(int(lwt), int(match.group(2))), match.group(3)


def parse_query_value(raw: str | None) -> Any:
    """Parse the ``checkpoint`` query parameter of the native pull: URL-decoded JSON, or absent."""
    if raw is None or raw == "":
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(
            f"checkpoint {_short(raw)} is not JSON. Send the checkpoint object of the previous "
            "pull as ?checkpoint=encodeURIComponent(JSON.stringify(checkpoint)), or leave it out "
            "on the first pull.",
            code="invalid_checkpoint",
        ) from None
    if value is not None and not isinstance(value, dict):
        raise BadRequest(
            "checkpoint must be a JSON object (or null); send the checkpoint object of the "
            "previous pull as ?checkpoint=encodeURIComponent(JSON.stringify(checkpoint))",
            code="invalid_checkpoint",
        )
    return value


def to_query_value(checkpoint: dict[str, Any] | None) -> str:
    """The URL-encoded form a client sends back; what ``parse_query_value`` reads after decoding."""
    return "" if checkpoint is None else quote(orjson.dumps(checkpoint).decode(), safe="")


def _is_whole_number(value: Any) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer() and 0 <= value <= JS_MAX_SAFE_INTEGER
    return isinstance(value, int) and 0 <= value <= JS_MAX_SAFE_INTEGER


def _short(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
    except TypeError:  # e.g. an integer beyond 64 bits, which orjson cannot serialise
        text = repr(value)
    return repr(text if len(text) <= 80 else text[:77] + "...")
