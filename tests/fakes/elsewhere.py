"""A host that is not the provider's: an internal service or an attacker's server.

It records every request that reaches it (method, URL, headers) and answers with an
internal-looking JSON document, so a test can prove that nothing (and no credential)
reached it and that its document never came back to the client as an "image".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

DOCUMENT = b'{"internal": "database password: hunter2-internal-doc"}'


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Elsewhere:
    url: str = ""  # set once the server runs
    received: list[Seen] = field(default_factory=list)
    app: web.Application = field(default_factory=web.Application)

    def __post_init__(self) -> None:
        self.app.router.add_route("*", "/{tail:.*}", self._any)

    async def _any(self, request: web.Request) -> web.Response:
        self.received.append(
            Seen(request.method, request.path_qs, dict(request.headers))
        )
        return web.Response(body=DOCUMENT, content_type="application/json")


def add_redirect(app: web.Application, path: str, to: str, status: int = 307) -> None:
    """A route on a fake provider's own host that redirects (GET and POST) to ``to``."""

    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": to})

    app.router.add_route("*", path, moved)
