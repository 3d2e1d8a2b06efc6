"""Errors → status + machine-readable code, in one place; and JSON bodies spliced from bytes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from syncd.exceptions import SyncdError

log = logging.getLogger("syncd.web")

# Failures of the database rather than of the request: the client should retry later.
DATABASE_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,  # shutdown, cancelled by timeout, cannot connect now
    asyncpg.InsufficientResourcesError,  # too many connections, disk full, out of memory
    OperationalError,
    DBAPIError,
)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
# What nginx logs for a client that closed the connection before the answer (never sent).
CLIENT_CLOSED_REQUEST = 499


class JSONBytes(Response):
    media_type = "application/json"


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> JSONBytes:
    return JSONBytes(orjson.dumps(value), status_code=status, headers=headers)


def error_body(status: int, code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(exc: Exception) -> JSONBytes:
    """The envelope of DESIGN.md §3 for any exception; never leaks internals for a 5xx."""
    if isinstance(exc, SyncdError):
        return json_response(
            error_body(exc.status, exc.code, exc.message, exc.details), exc.status
        )
    if isinstance(exc, HTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        # Keep the exception's headers: a 405 must say which methods are allowed (``Allow``).
        return json_response(
            error_body(exc.status_code, code, str(exc.detail)), exc.status_code, exc.headers
        )
    if isinstance(exc, ClientDisconnect):
        # The client went away while sending its body (a closed tab, a lost network): nothing
        # was done and there is nobody to answer; not a failure of syncd.
        log.debug("the client disconnected before its request body was read")
        return json_response(
            error_body(CLIENT_CLOSED_REQUEST, "client_disconnected",
                       "the client closed the connection before its request was read"),
            CLIENT_CLOSED_REQUEST,
        )
    if isinstance(exc, DATABASE_UNAVAILABLE):
        log.warning("database unavailable: %s", exc)
        return json_response(
            error_body(503, "database_unavailable", "the database is unavailable; retry shortly"),
            503,
        )
    log.exception("unhandled error", exc_info=exc)
    return json_response(
        error_body(500, "internal_error", "syncd failed to handle the request; see its logs"), 500
    )


async def handle_exception(_request: Request, exc: Exception) -> Response:
    return error_response(exc)
