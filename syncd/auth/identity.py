"""Who is asking: credentials as they arrive, and the identity they prove. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request carries, before anything is checked."""

    token: str | None = None
    # Where the token came from: "header", "subprotocol", "query", "message" or "none".
    source: str = "none"
    # The raw Authorization and Cookie headers, for forward authentication.
    headers: Mapping[str, str] = field(default_factory=dict)
    # The partition a service key asks to act for (header X-Syncd-Partition).
    partition: str | None = None


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


# Authentication mode "none": everybody is this identity (local development only).
ANONYMOUS = Identity(subject=None)


def identity_key(identity: Identity) -> Hashable:
    """Who a caller is, for matching its requests and streams: the same subject (or the same
    service key acting for the same partition) is the same caller."""
    return (identity.subject, identity.service, identity.acting_partition)
