"""Request input: size-limited body reads, JSON parsing and query values, with precise errors."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from syncd.exceptions import BadRequest, PayloadTooLarge, UnsupportedMediaType

JSON_MEDIA_TYPE = "application/json"


async def read_json(request: Request, max_bytes: int) -> Any:
    """The parsed JSON body; 415 unless it is declared JSON, 413 as soon as it is known to
    exceed ``max_bytes``."""
    require_json(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise BadRequest("the request body is empty; send JSON", code="invalid_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None


def require_json(request: Request) -> None:
    """Refuse a body not declared ``application/json`` (parameters such as charset are fine).

    A page on another origin can POST ``text/plain`` (or a form) with the user's cookie without
    asking the browser's CORS preflight; ``application/json`` always needs that preflight, which
    only SYNCD_CORS_ORIGINS pass. Checked before the body is read."""
    declared = request.headers.get("content-type")
    media_type = (declared or "").partition(";")[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        shown = "no Content-Type" if declared is None else f"Content-Type {declared[:80]!r}"
        raise UnsupportedMediaType(
            f"the request body must be JSON sent with Content-Type: {JSON_MEDIA_TYPE}; "
            f"got {shown}",
            code="unsupported_media_type",
        )


def _too_large(size: int, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body has at least {size} bytes; the limit is {max_bytes} "
        "(SYNCD_MAX_BODY_BYTES). Send fewer documents per push.",
        code="body_too_large",
    )


def parse_limit(raw: str | None) -> int | None:
    """``limit``; absent or empty means SYNCD_PULL_DEFAULT_LIMIT (the service checks the range)."""
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"limit must be an integer, got {raw!r}", code="invalid_limit") from None
