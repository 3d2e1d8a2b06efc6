"""Where a client's credentials come from; every way in hands them to the same authenticator.

Browsers cannot set headers on a websocket, so besides ``Authorization: Bearer <token>`` a token
is accepted as a websocket subprotocol ``bearer.<token>`` (offered next to ``syncd.v1``, which
the server then selects) or as the query parameter ``access_token``.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from syncd.auth import Authenticator
from syncd.auth.access import PARTITION_HEADER
from syncd.auth.identity import Credentials, Identity
from syncd.web.observability import SUBJECT_SCOPE_KEY

SUBPROTOCOL = "syncd.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
TOKEN_QUERY_PARAMETER = "access_token"
# Longer Authorization headers are refused before any parsing (no real token is this long).
MAX_CREDENTIAL_LENGTH = 16 * 1024


def credentials_of(connection: HTTPConnection, token: str | None = None) -> Credentials:
    """The credentials of a request; ``token`` overrides them (RxDB websocket ``auth``)."""
    headers = {
        name: value
        for name in ("authorization", "cookie")
        if (value := connection.headers.get(name)) is not None
    }
    partition = connection.headers.get(PARTITION_HEADER)
    if token is not None:
        return Credentials(token, "message", headers, partition)
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return Credentials(value.strip(), "header", headers, partition)
    for offered in _offered_subprotocols(connection):
        if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(offered) > 7:
            return Credentials(
                offered[len(TOKEN_SUBPROTOCOL_PREFIX) :], "subprotocol", headers, partition
            )
    query_token = connection.query_params.get(TOKEN_QUERY_PARAMETER)
    if query_token:
        return Credentials(query_token, "query", headers, partition)
    return Credentials(None, "none", headers, partition)


async def identify(connection: HTTPConnection, token: str | None = None) -> Identity:
    """Authenticate the request; raises Unauthorized (401) or Unavailable (503)."""
    authenticator: Authenticator = connection.app.state.authenticator
    identity = await authenticator.authenticate(credentials_of(connection, token))
    # For the request's log line (web/observability.py): who asked, never their credentials.
    connection.scope[SUBJECT_SCOPE_KEY] = identity.subject
    return identity


def selected_subprotocol(connection: HTTPConnection) -> str | None:
    """The subprotocol to accept: ours if offered (never echo a token back)."""
    return SUBPROTOCOL if SUBPROTOCOL in _offered_subprotocols(connection) else None


def _offered_subprotocols(connection: HTTPConnection) -> list[str]:
    header = connection.headers.get("sec-websocket-protocol", "")
    return [item.strip() for item in header.split(",") if item.strip()]
