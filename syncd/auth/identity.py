"""Who is asking: credentials as they arrive, and the identity they prove. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request carries, before anything is checked."""

    token: str | None = None
    # Where the token came from: "header", "subprotocol", "query", "message" or "none".
    source: str = "none"
    # The raw Authorization and Cookie headers, for forward authentication; without the ambient
    # ones (see ``withheld_for``) when the request's origin may not use them.
    headers: Mapping[str, str] = field(default_factory=dict)
    # The partition a service key asks to act for (header X-Syncd-Partition).
    partition: str | None = None
    # The Origin whose ambient credentials were dropped: credentials a browser attaches by
    # itself (cookies, a non-Bearer Authorization), sent from an origin that is neither syncd's
    # own nor allowed by SYNCD_CORS_ORIGINS. None when nothing was dropped.
    withheld_for: str | None = None
    # What the request was (Origin, Referer, User-Agent, X-Forwarded-*), lower-case names, for
    # an API that decides itself (forward authentication).
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Identity:
    """A checked caller. Its claims decide what it may read and write, and where."""

    subject: str | None
    claims: Mapping[str, Any] = field(default_factory=dict)
    # Unix time after which the credentials are no longer valid; live streams end then.
    expires_at: float | None = None
    # A service key (the API beside syncd): may act for any partition, but must name it.
    service: bool = False
    acting_partition: str | None = None
    # Credentials that can be revoked before they expire (forward authentication): a stream
    # calls ``recheck`` every ``recheck_seconds`` (``syncd/auth/recheck.py``). It answers the
    # identity the credentials prove now, or raises Unauthorized/Forbidden once they are no
    # longer accepted, Unavailable when that cannot be told right now.
    recheck: Callable[[], Awaitable[Identity]] | None = field(
        default=None, compare=False, repr=False
    )
    recheck_seconds: float = 0.0


# Authentication mode "none": everybody is this identity (local development only).
ANONYMOUS = Identity(subject=None)


def identity_key(identity: Identity) -> Hashable:
    """Who a caller is, for matching its requests and streams: the same subject (or the same
    service key acting for the same partition) is the same caller."""
    return (identity.subject, identity.service, identity.acting_partition)


def expiry_of(exp: Any) -> float:
    """An ``exp`` claim as Unix time, read exactly as PyJWT reads it when it verifies a token
    (``int(exp)``): ``1700000000``, ``1700000000.7`` and ``"1700000000"`` all end at 1700000000.

    So a stream ends when HTTP starts refusing the same token, whatever JSON type ``exp`` has.
    Raises ValueError for anything ``int()`` cannot read (PyJWT refuses such a token)."""
    try:
        return float(int(exp))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"exp must be a number of seconds since 1970, got {exp!r:.40}") from None
