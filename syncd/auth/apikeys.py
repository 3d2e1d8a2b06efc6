"""Service keys for the API beside syncd: static bearer tokens, stored only as SHA-256 hashes.

A service identity may act for any partition, but must name it (header X-Syncd-Partition) on a
partitioned collection, so that a service write always lands where it was meant to.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from syncd.auth.identity import Credentials, Identity
from syncd.config import ConfigError


def new_key() -> str:
    return "sk_" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, configured: str) -> None:
        self._hashes: list[tuple[str, bytes]] = []
        for entry in filter(None, (e.strip() for e in configured.split(","))):
            name, sep, digest = entry.partition(":")
            if not sep or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
                raise ConfigError(
                    "SYNCD_API_KEYS entries are NAME:SHA256HEX (make one with "
                    f"`syncd api-key new NAME`); got {entry[:20]!r}"
                )
            self._hashes.append((name, bytes.fromhex(digest)))

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def identify(self, credentials: Credentials) -> Identity | None:
        """The service identity for a known key, else None. Compares every configured hash in
        constant time, so timing says nothing about which key nearly matched."""
        if not credentials.token:
            return None
        presented = hashlib.sha256(credentials.token.encode()).digest()
        found = None
        for name, digest in self._hashes:
            if hmac.compare_digest(presented, digest):
                found = name
        if found is None:
            return None
        return Identity(
            subject=f"service:{found}",
            claims={"service": found},
            service=True,
            acting_partition=credentials.partition,
        )
