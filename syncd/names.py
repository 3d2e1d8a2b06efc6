"""Which collection names syncd registers, and the schema version a client states. Pure; no I/O.

A collection is reached by name in a URL path segment (``/api/v1/sync/{name}``,
``{prefix}/{name}/{version}``) and, over RxDB's websocket, by the client's own collection name.
So a name must survive both: what RxDB allows for collection names (dev-mode's
``^[a-z][_$a-z0-9-]*$`` in 15, ``^[a-z][_$a-zA-Z0-9-]*$`` in 17) plus upper case, digits first
and ``.`` for apps that name collections for the native API only, and nothing a path segment
cannot carry as itself: no ``/``, ``%``, whitespace or ``..``.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 128  # syncd_collections.name is a VARCHAR(128)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_$.-]*")

SCHEMA_VERSION_HEADER = "X-Syncd-Schema-Version"
SCHEMA_VERSION_QUERY = "schemaVersion"
_VERSION = re.compile(r"0|[1-9][0-9]{0,8}")


def collection_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a collection's name, or None when it can."""
    rule = (
        "a collection name starts with a letter or digit and has only letters, digits, "
        "'_', '$', '-' and '.' (as RxDB collection names do; at most "
        f"{MAX_NAME_LENGTH} characters), so clients can reach it in a URL path"
    )
    if not name:
        return f"the collection name is empty; {rule}"
    if len(name) > MAX_NAME_LENGTH:
        return f"the collection name has {len(name)} characters; {rule}"
    if not _NAME.fullmatch(name) or ".." in name:
        return f"{name!r} cannot be a collection name: {rule}"
    return None


def parse_schema_version(raw: str | None, where: str) -> int | None:
    """A stated schema version (a non-negative integer), None when not stated; ValueError with
    the reason otherwise. ``where`` names the header or query parameter for the message."""
    if raw is None or raw == "":
        return None
    if not _VERSION.fullmatch(raw.strip()):
        raise ValueError(
            f"{where} must be the client's RxDB schema version (a non-negative integer, "
            f"collection.schema.version), got {raw[:40]!r}"
        )
    return int(raw.strip())
