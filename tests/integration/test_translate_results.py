"""``images_result`` with provider URLs: fetched through a real ``Upstream`` from a fake
image host when the client wants base64, passed on when it wants URLs."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.errors import UpstreamProtocolError
from proxy.metrics import Metrics
from proxy.models import EditJob
from proxy.providers._results import Encoded, images_result
from proxy.providers.base import StaticKey
from proxy.upstream import Upstream
from tests.conftest import AiohttpServer
from tests.images import jpeg_like, png

PICTURE = png(5, 5, seed=11)
HOSTS = ["http://127.0.0.1:*"]
SEEN = web.AppKey("seen", list[dict[str, str]])


@pytest.fixture
async def host(aiohttp_server: AiohttpServer) -> TestServer:
    seen: list[dict[str, str]] = []

    async def image(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=PICTURE, content_type="image/png")

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404, text="expired")

    async def loop(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": request.path})

    async def bad_location(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://[bad"})

    async def tiny(request: web.Request) -> web.Response:
        return web.Response(body=PICTURE[:4])

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=PICTURE + b"\0" * (2 * 1024 * 1024))

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to refuse early
        await resp.prepare(request)
        await resp.write(PICTURE)
        for _ in range(40):
            await resp.write(b"\0" * 65536)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/signed/out.png", image)
    app.router.add_get("/signed/gone.png", gone)
    app.router.add_get("/signed/loop", loop)
    app.router.add_get("/signed/bad-location", bad_location)
    app.router.add_get("/signed/tiny", tiny)
    app.router.add_get("/signed/big", big)
    app.router.add_get("/signed/trickle", trickle)
    app[SEEN] = seen
    return await aiohttp_server(app)


@pytest.fixture
async def upstream(
    host: TestServer, registry: CollectorRegistry
) -> AsyncIterator[Upstream]:
    async with aiohttp.ClientSession() as session:
        yield Upstream(
            "bfl",
            base_url=str(host.make_url("")),
            session=session,
            auth=StaticKey("x-key", "secret-key"),
            key_env="BFL_API_KEY",
            metrics=Metrics(registry),
            max_response_bytes=1024 * 1024,
        )


def _job(response_format: str | None) -> EditJob:
    return EditJob(
        operation="generate", provider="bfl", model="m", prompt="x", source="json",
        response_format=response_format,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_urls_are_fetched_for_b64_without_credentials(
    upstream: Upstream, host: TestServer
) -> None:
    url = str(host.make_url("/signed/out.png"))
    result = await images_result(
        [url], job=_job(None), upstream=upstream, cost=0.04, hosts=HOSTS
    )
    body = msgspec.json.decode(result.body)
    assert base64.b64decode(body["data"][0]["b64_json"]) == PICTURE
    assert result.images == 1
    assert result.cost == 0.04
    assert "x-key" not in {k.lower() for k in host.app[SEEN][0]}


async def test_urls_pass_through_when_the_client_wants_urls(
    upstream: Upstream, host: TestServer
) -> None:
    url = str(host.make_url("/signed/out.png"))
    result = await images_result(
        [url, jpeg_like(), Encoded("QUJD", "image/webp")],
        job=_job("url"),
        upstream=upstream,
        extra={"output_format": "png"},
    )
    body = msgspec.json.decode(result.body)
    assert body["data"][0] == {"url": url}
    assert body["data"][1]["url"].startswith("data:image/jpeg;base64,")
    assert body["data"][2] == {"url": "data:image/webp;base64,QUJD"}
    assert body["output_format"] == "png"
    assert host.app[SEEN] == []


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/signed/gone.png", "answered HTTP 404"),
        ("ftp://host/x.png", "outside its allowed hosts"),
        ("/signed/loop", "redirected more than 3 times"),
        ("/signed/bad-location", "redirected to an invalid URL"),
        ("/signed/tiny", "not a PNG, JPEG or WebP image"),
        ("/signed/big", "over 1048576 bytes"),
        ("/signed/trickle", "over 1048576 bytes"),
    ],
)
async def test_bad_result_urls_are_protocol_errors(
    upstream: Upstream, host: TestServer, path: str, why: str
) -> None:
    url = path if path.startswith("ftp") else str(host.make_url(path))
    with pytest.raises(UpstreamProtocolError, match=why) as exc:
        await images_result([url], job=_job("b64_json"), upstream=upstream, hosts=HOSTS)
    assert exc.value.provider == "bfl"
    assert exc.value.status == 502
