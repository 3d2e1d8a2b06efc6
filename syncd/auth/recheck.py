"""Streams whose credentials can be revoked ask again on a schedule, and end on a no.

A stream checks its credentials when it opens, and a token's ``exp`` ends it. A forward-auth
answer usually has no ``exp`` and the API may revoke it at any time, so such identities carry a
``recheck`` (``Identity.recheck``) that every open stream runs each ``recheck_seconds``:

* a refusal (401 or 403) ends the stream as an expired token does (close 4401, SSE ended);
* an answer naming another subject ends it the same way, and so does one whose claims that
  decide what the stream may see (``claims``: the partition claim, read requirements,
  claim-bound filter fields) changed: the client reconnects, and its pull decides again — a
  revoked filter value leaves the device (docs/partial-sync.md);
* an API that cannot answer (503) keeps the stream, since one blip should not disconnect every
  client, but after ``UNCONFIRMED_LIMIT`` failed rechecks in a row it is ended as unavailable
  (close 1013, SSE ended): a revoked user keeps it at most that many intervals in an outage.

The transports only see ``watch``; they do not know which mode made the identity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from syncd.auth.identity import Identity
from syncd.exceptions import Forbidden, SyncdError, Unauthorized, Unavailable

log = logging.getLogger("syncd.auth")

UNCONFIRMED_LIMIT = 3

Ended = Callable[[SyncdError], None]


def watch(
    identity: Identity, ended: Ended, claims: Callable[[], Iterable[str]] = tuple
) -> asyncio.Task[None] | None:
    """Re-check ``identity`` on its schedule until the task is cancelled; ``ended`` is called
    once, with the error to close for, when the credentials are no longer good. None when the
    identity needs no rechecks (tokens, service keys, mode none)."""
    if identity.recheck is None or identity.recheck_seconds <= 0:
        return None
    return asyncio.create_task(_rechecks(identity, ended, claims))


async def _rechecks(
    identity: Identity, ended: Ended, claims: Callable[[], Iterable[str]]
) -> None:
    assert identity.recheck is not None
    unconfirmed = 0
    while True:
        await asyncio.sleep(identity.recheck_seconds)
        try:
            fresh = await identity.recheck()
        except (Unauthorized, Forbidden) as exc:
            ended(Unauthorized(f"the credentials are no longer accepted ({exc.message}); "
                               "reconnect with valid ones", code="credentials_revoked"))
            return
        except Exception as exc:  # Unavailable, or a bug: either way nobody said yes
            unconfirmed += 1
            log.warning("could not recheck a stream's credentials (%d/%d): %s",
                        unconfirmed, UNCONFIRMED_LIMIT, exc)
            if unconfirmed >= UNCONFIRMED_LIMIT:
                ended(Unavailable("the credentials could not be confirmed for a while; "
                                  "reconnect shortly", code="auth_unavailable"))
                return
            continue
        unconfirmed = 0
        if fresh.subject != identity.subject:
            ended(Unauthorized("the credentials now prove another caller; reconnect",
                               code="credentials_revoked"))
            return
        changed = sorted(c for c in set(claims())
                         if fresh.claims.get(c) != identity.claims.get(c))
        if changed:
            ended(Unauthorized(f"the claims {', '.join(changed)} changed; reconnect, so that "
                               "what this stream may see is decided again",
                               code="claims_changed"))
            return
