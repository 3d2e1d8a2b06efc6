"""The admin page's routes: a static shell (HTML, JS, CSS shipped in the package; it holds no
data, so it is served to anyone) and the JSON endpoint it polls, which admits only admins."""

from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from syncd.admin.guard import admit
from syncd.admin.overview import Overview
from syncd.web.responses import JSONBytes, json_response

# The page loads nothing but its own files and talks only to its own origin; it may not be
# framed (clickjacking) and never sends a Referer.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "admin.css": "text/css; charset=utf-8",
}


def routes() -> list[BaseRoute]:
    static = files("syncd.admin") / "static"
    bodies = {name: (static / name).read_bytes() for name in _TYPES}

    def serve(name: str) -> Route:
        async def endpoint(_request: Request) -> Response:
            return Response(bodies[name], media_type=_TYPES[name], headers=_HEADERS)

        path = "/admin" if name == "index.html" else f"/admin/{name}"
        return Route(path, endpoint, methods=["GET"])

    async def slash(_request: Request) -> Response:
        return RedirectResponse("/admin", status_code=308)

    return [
        *(serve(name) for name in _TYPES),
        Route("/admin/", slash, methods=["GET"]),
        Route("/admin/api/overview", overview, methods=["GET"]),
    ]


async def overview(request: Request) -> JSONBytes:
    await admit(request)
    reader: Overview = request.app.state.overview
    return json_response(await reader.read(), headers={"Cache-Control": "no-store"})
