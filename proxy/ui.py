"""``GET /ui``: the browser page (image playground and the caller's spend).

The page is static files under ``proxy/static/ui`` (HTML, CSS, ES modules), read once at start-up; no
build step, no CDN, no request to any third party, because sidecars and egress
gateways run in closed networks. It holds nothing secret: it calls the public API with
the client key the user types, so with client keys configured it can do nothing
without one. Every answer carries a strict Content-Security-Policy (no inline script or
style, nothing but this origin), so text the page shows from an answer cannot run.

``ui.enabled: auto`` serves the page only when the gateway listens on a loopback
address: a page on a network listener is the operator's decision, not a default.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from importlib import resources
from typing import NamedTuple

from aiohttp import web

from proxy.config import Config

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate on every load, so a gateway upgrade never runs a stale script.
    "Cache-Control": "no-cache",
}
# URL name -> (file under proxy/static/ui, content type). A fixed table: no path
# from the request ever reaches the file system.
_FILES = {
    "index.html": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "api.js": ("api.js", "text/javascript; charset=utf-8"),
    "mask.js": ("mask.js", "text/javascript; charset=utf-8"),
    "run.js": ("run.js", "text/javascript; charset=utf-8"),
    "app.css": ("app.css", "text/css; charset=utf-8"),
}


class _Asset(NamedTuple):
    body: bytes
    content_type: str


UI_ASSETS = web.AppKey("ui_assets", dict[str, _Asset])


def ui_enabled(config: Config) -> bool:
    setting = config.ui.enabled
    if setting != "auto":
        return setting
    host = config.server.host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name or a wildcard (0.0.0.0, ::): reachable from a network


def _read_assets() -> dict[str, _Asset]:
    folder = resources.files("proxy").joinpath("static/ui")
    return {
        name: _Asset(folder.joinpath(file).read_bytes(), ctype)
        for name, (file, ctype) in _FILES.items()
    }


async def assets_ctx(app: web.Application) -> AsyncIterator[None]:
    app[UI_ASSETS] = await asyncio.to_thread(_read_assets)
    yield


async def _serve(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index.html")
    asset = request.app[UI_ASSETS].get(name)
    if asset is None:
        # Returned, not raised: the error middleware would answer without HEADERS.
        return web.Response(status=404, text="not found", headers=HEADERS)
    return web.Response(
        body=asset.body, headers={**HEADERS, "Content-Type": asset.content_type}
    )


def add_ui_routes(app: web.Application, config: Config) -> None:
    """Registers ``/ui`` and its files when the config enables the page (its assets
    are read by ``assets_ctx``, which ``create_app`` registers)."""
    if not ui_enabled(config):
        return
    app.router.add_get("/ui", _serve)
    app.router.add_get("/ui/{name}", _serve)
