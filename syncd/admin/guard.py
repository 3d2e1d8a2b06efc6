"""Who may see the admin page's data: service keys, callers with the admin claim, and in mode
``none`` anyone, but only while syncd serves a loopback address."""

from __future__ import annotations

from starlette.requests import Request

from syncd.auth.access import claim_includes
from syncd.auth.identity import ANONYMOUS, Identity
from syncd.config import Settings, is_loopback
from syncd.exceptions import Forbidden
from syncd.web.credentials import identify


async def admit(request: Request) -> Identity:
    """The caller, when it may see the admin data; raises Unauthorized (401) for missing or
    invalid credentials, Forbidden (403) for valid ones without the right."""
    settings: Settings = request.app.state.settings
    if settings.auth_mode == "none":
        # Nobody can prove anything in mode none, so the bind address is the only guard: on a
        # public address (SYNCD_AUTH_NONE_ALLOW_PUBLIC) the page stays shut.
        if is_loopback(settings.host):
            return ANONYMOUS
        raise Forbidden(
            "the admin page is not served without authentication on a non-loopback address; "
            "configure SYNCD_AUTH_MODE (service keys or SYNCD_ADMIN_CLAIM), or serve on "
            "127.0.0.1", code="admin_needs_authentication",
        )
    identity = await identify(request)
    if identity.service:
        return identity
    claim = settings.admin_claim_pair
    if claim is not None and claim_includes(identity.claims.get(claim[0]), claim[1]):
        return identity
    needs = "a service key" + (
        f" or credentials whose claim {claim[0]!r} includes {claim[1]!r}" if claim else
        " (SYNCD_ADMIN_CLAIM is not set, so no user credentials are admitted)")
    raise Forbidden(f"the admin page needs {needs}", code="not_admin")
