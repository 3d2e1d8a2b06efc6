"""The schema version a client states: header ``X-Syncd-Schema-Version`` or query
``schemaVersion`` (websockets from browsers cannot set headers, so streams use the query)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from syncd.exceptions import BadRequest
from syncd.names import SCHEMA_VERSION_HEADER, SCHEMA_VERSION_QUERY, parse_schema_version


def stated_schema_version(connection: HTTPConnection) -> int | None:
    """The client's RxDB schema version, or None when it states none; 400 when it is not a
    version, or when header and query disagree."""
    try:
        header = parse_schema_version(
            connection.headers.get(SCHEMA_VERSION_HEADER), f"the {SCHEMA_VERSION_HEADER} header"
        )
        query = parse_schema_version(
            connection.query_params.get(SCHEMA_VERSION_QUERY),
            f"the query parameter {SCHEMA_VERSION_QUERY}",
        )
    except ValueError as exc:
        raise BadRequest(str(exc), code="invalid_schema_version") from None
    if header is not None and query is not None and header != query:
        raise BadRequest(
            f"the {SCHEMA_VERSION_HEADER} header ({header}) and the query parameter "
            f"{SCHEMA_VERSION_QUERY} ({query}) disagree; send the client's schema version once",
            code="invalid_schema_version",
        )
    return header if header is not None else query
