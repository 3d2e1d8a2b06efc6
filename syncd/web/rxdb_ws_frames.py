"""RxDB's websocket envelope: reading requests and writing answers. Pure; no I/O.

The socket (syncd/web/rxdb_ws.py) handles one request at a time; these helpers turn a frame into
a ``Request`` and results or failures into the frames the client matches by ``id``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Final

import orjson

from syncd.exceptions import BadRequest, SyncdError, Unavailable
from syncd.web.responses import error_response
from syncd.wire import page_body

log = logging.getLogger("syncd.web")

PULL: Final = "masterChangesSince"
WRITE: Final = "masterWrite"
STREAM: Final = "masterChangeStream$"
AUTH: Final = "auth"
COUNTED_METHODS = frozenset((PULL, WRITE, STREAM, AUTH))


@dataclass(frozen=True, slots=True)
class Request:
    id: Any  # any JSON value but null, echoed back as sent
    collection: Any
    method: Any
    params: Any
    size: int
    problem: SyncdError | None = None  # the frame could not be read: answer with this error


def parse(frame: str | bytes) -> Request | None:
    """A request, or None for a frame without an id (nothing could answer it: logged)."""
    problem: SyncdError | None = None
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        # orjson refuses a few things the standard parser reads (lone surrogates, numbers
        # beyond a double, deep nesting): enough to find the id and answer with an error.
        try:
            message = json.loads(frame)
            orjson.dumps([message.get("id"), message.get("collection")])
        except Exception:
            log.warning("rxdb websocket: ignored a frame that is not JSON: %s", short(frame))
            return None
        problem = BadRequest(f"the frame is not JSON syncd can read: {exc}", code="invalid_json")
        message = {key: message.get(key) for key in ("id", "collection", "method")}
    if not isinstance(message, dict) or message.get("id") is None:
        log.warning("rxdb websocket: ignored a frame without an id: %s", short(frame))
        return None
    return Request(
        id=message["id"],
        collection=message.get("collection"),
        method=message.get("method"),
        params=message.get("params"),
        size=len(frame),
        problem=problem,
    )


def failure(request: Request, exc: Exception) -> str | None:
    """The answer to a request that failed: a pull gets an empty page echoing its checkpoint
    (the client has no error channel for pulls), anything else ``result: null`` (a write is then
    retried by the client); both with an ``error`` object. None for requests never answered."""
    if request.method == STREAM or request.method == AUTH:
        return None
    result = page_body([], echo(request.params)) if request.method == PULL else b"null"
    return envelope(request, result, error_object(exc, as_syncd_error(exc)))


def envelope(request: Request, result: bytes, error: dict[str, Any] | None = None) -> str:
    body = (
        b'{"id":' + orjson.dumps(request.id)
        + b',"collection":' + orjson.dumps(request.collection)
        + b',"result":' + result
    )
    if error is not None:
        body += b',"error":' + orjson.dumps(error)
    return (body + b"}").decode()


def stream_frame(name: str, result: bytes) -> str:
    return (b'{"id":"stream","collection":' + orjson.dumps(name) + b',"result":' + result
            + b"}").decode()


def collection_name(request: Request) -> str:
    if not isinstance(request.collection, str):
        raise BadRequest("collection must be the name of a syncd collection (a string)",
                         code="invalid_collection")
    return request.collection


def pull_params(params: Any) -> tuple[Any, int | None]:
    if not isinstance(params, list) or not params:
        raise BadRequest(f"{PULL} params must be [checkpoint or null, batchSize]",
                         code="invalid_params")
    limit = params[1] if len(params) > 1 else None
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise BadRequest(f"batchSize must be an integer, got {short(limit)}",
                         code="invalid_limit")
    return params[0], limit


def echo(params: Any) -> dict[str, Any] | None:
    """The checkpoint a failed pull answers with: the request's own, when it is an object."""
    checkpoint = params[0] if isinstance(params, list) and params else None
    return checkpoint if isinstance(checkpoint, dict) else None


def token_of(params: Any) -> str | None:
    """The token in an ``auth`` message's headers: ``Authorization: Bearer <token>`` (any
    case), or a bare ``Authorization: <token>``."""
    headers = params[0] if isinstance(params, list) and params else None
    if not isinstance(headers, dict):
        return None
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == "authorization" and isinstance(value, str):
            scheme, _, rest = value.strip().partition(" ")
            if rest.strip():
                return rest.strip() if scheme.lower() == "bearer" else None
            return scheme if scheme and scheme.lower() != "bearer" else None
    return None


def as_syncd_error(exc: Exception) -> SyncdError:
    if isinstance(exc, SyncdError):
        return exc
    response = error_response(exc)  # logs it, as for any HTTP request
    error = orjson.loads(response.body)["error"]
    kind = Unavailable if response.status_code == Unavailable.status else SyncdError
    return kind(error["message"], code=error["code"])


def error_object(exc: Exception, error: SyncdError) -> dict[str, Any]:
    body: dict[str, Any] = {"status": error.status, "code": error.code, "message": error.message}
    if isinstance(exc, SyncdError) and exc.details is not None:
        body["details"] = exc.details
    return body


def method_label(method: Any) -> str:
    """A method name for metrics and logs: one of the protocol's, else ``other`` (bounded)."""
    return method if method in COUNTED_METHODS else "other"


def short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text if len(text) <= 80 else text[:77] + "...")
