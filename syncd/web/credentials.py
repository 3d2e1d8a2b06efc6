"""Where a client's credentials come from; every way in hands them to the same authenticator.

Browsers cannot set headers on a websocket, so besides ``Authorization: Bearer <token>`` a token
is accepted as a websocket subprotocol ``bearer.<token>`` (offered next to ``syncd.v1``, which
the server then selects) or as the query parameter ``access_token``.

Which credentials count depends on where the request comes from. A browser attaches cookies (and
a cached non-Bearer ``Authorization``, e.g. Basic) to requests that any page makes, also a page
on another site, and CORS does not stop that for websockets, Server-Sent Events or a text/plain
POST. So these ambient credentials count only when the request has no ``Origin`` (servers,
curl, a browser's same-origin GET), or its ``Origin`` is syncd's own (its ``Host``) or allowed by
SYNCD_CORS_ORIGINS; otherwise they are dropped here, for every way in, and forward mode answers
403 (``cross_origin_credentials``) when nothing else is left. Tokens are never ambient: a page
can only send one it was given, so a token counts from any origin.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from syncd.auth import Authenticator
from syncd.auth.access import PARTITION_HEADER
from syncd.auth.identity import Credentials, Identity
from syncd.web.cors import AllowedOrigins
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
    context = request_context(connection)
    origin = context.get("origin")
    withheld_for = None
    if origin is not None and not _may_use_ambient(connection, origin):
        for name in [name for name, value in headers.items() if _ambient(name, value)]:
            del headers[name]
            withheld_for = origin

    def made(token: str | None, source: str) -> Credentials:
        return Credentials(token, source, headers, connection.headers.get(PARTITION_HEADER),
                           withheld_for, context)

    if token is not None:
        return made(token, "message")
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return made(value.strip(), "header")
    for offered in _offered_subprotocols(connection):
        if offered.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(offered) > 7:
            return made(offered[len(TOKEN_SUBPROTOCOL_PREFIX) :], "subprotocol")
    query_token = connection.query_params.get(TOKEN_QUERY_PARAMETER)
    if query_token:
        return made(query_token, "query")
    return made(None, "none")


def request_context(connection: HTTPConnection) -> dict[str, str]:
    """What an API needs to judge a request besides its credentials, named as forward-auth
    proxies (Traefik, nginx) name it. The URI is the path only: the query may hold a token."""
    headers = connection.headers
    context = {
        name: value
        for name in ("origin", "referer", "user-agent")
        if (value := headers.get(name)) is not None
    }
    scope = connection.scope
    if connection.client is not None:
        # The address uvicorn attributes the request to (behind a trusted proxy: the client's).
        context["x-forwarded-for"] = connection.client.host
    if "host" in headers:
        context["x-forwarded-host"] = headers["host"]
    context["x-forwarded-proto"] = "https" if scope.get("scheme") in ("https", "wss") else "http"
    context["x-forwarded-method"] = scope.get("method", "GET")  # a websocket upgrade is a GET
    raw_path = scope.get("raw_path")
    if not isinstance(raw_path, bytes):
        raw_path = scope["path"].encode()
    context["x-forwarded-uri"] = raw_path.decode("latin-1")  # as received, percent-encoded
    return context


def _may_use_ambient(connection: HTTPConnection, origin: str) -> bool:
    """Whether a browser page of ``origin`` may use the credentials its browser attaches."""
    origins: AllowedOrigins = connection.app.state.origins
    if origins.allows(origin):
        return True
    # The same origin as syncd's (scheme aside: TLS usually ends at a proxy in front of syncd).
    host = connection.headers.get("host")
    _, separator, authority = origin.partition("://")
    return bool(separator) and host is not None and authority.lower() == host.lower()


def _ambient(name: str, value: str) -> bool:
    """Cookies, and an Authorization the browser manages itself (Basic, Digest, Negotiate)."""
    return name == "cookie" or value.partition(" ")[0].lower() != "bearer"


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
