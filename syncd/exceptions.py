"""The error tree. The web layer maps each class to a status and code in one place.

SyncdError
├── BadRequest            400  malformed JSON, wrong shapes, bad checkpoints, bad limits
├── Unauthorized          401
├── Forbidden             403
├── NotFound              404  unknown collection
├── PayloadTooLarge       413
├── UnsupportedMediaType  415  a request body that is not declared application/json
├── Unprocessable         422  schema violations, values PostgreSQL cannot store
├── UpgradeRequired       426  the client's schema version is older than the collection's
└── Unavailable           503  the database is unreachable
"""

from __future__ import annotations

from typing import Any, ClassVar


class SyncdError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details


class BadRequest(SyncdError):
    status = 400
    default_code = "bad_request"


class Unauthorized(SyncdError):
    status = 401
    default_code = "unauthorized"


class Forbidden(SyncdError):
    status = 403
    default_code = "forbidden"


class NotFound(SyncdError):
    status = 404
    default_code = "not_found"


class PayloadTooLarge(SyncdError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(SyncdError):
    status = 415
    default_code = "unsupported_media_type"


class Unprocessable(SyncdError):
    status = 422
    default_code = "unprocessable"


class UpgradeRequired(SyncdError):
    status = 426
    default_code = "outdated_schema"


class Unavailable(SyncdError):
    status = 503
    default_code = "unavailable"
