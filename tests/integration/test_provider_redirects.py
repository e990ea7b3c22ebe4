"""Provider redirects and URLs a provider names: nothing is followed off the provider's
own hosts, no credential leaves them, and only an image comes back as an image.

``Elsewhere`` stands for an internal host or an attacker's server on another origin: it
records whatever reaches it and answers an internal-looking JSON document.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.errors import UpstreamProtocolError
from proxy.hosts import host_allowed
from proxy.metrics import Metrics
from proxy.providers.base import StaticKey
from proxy.upstream import Upstream
from tests import contract
from tests.conftest import UPSTREAM_KEY, AiohttpServer, StartGateway, StartProxy
from tests.fakes.base import OUTPUT_PNG, Reply
from tests.fakes.bfl import FakeBFL
from tests.fakes.elsewhere import DOCUMENT, Elsewhere, add_redirect
from tests.fakes.replicate import FakeReplicate
from tests.fakes.vertex import FakeVertex, key_file, new_key
from tests.gateway import generate
from tests.images import png

BFL_MODEL = "bfl/flux-pro-1.1"
REPLICATE_MODEL = "replicate/black-forest-labs/flux-kontext-pro"


@pytest.fixture
async def elsewhere(aiohttp_server: AiohttpServer) -> Elsewhere:
    host = Elsewhere()
    server = await aiohttp_server(host.app)
    host.url = str(server.make_url("")).rstrip("/")
    return host


@pytest.fixture(params=contract.PARAMS, ids=contract.IDS)
async def redirecting(
    request: pytest.FixtureRequest, start_gateway: StartGateway, elsewhere: Elsewhere
) -> contract.Env:
    """Each provider type, its API answering the edit with a 307 to ``elsewhere``."""
    env = await contract.start_env(start_gateway, request.param)
    env.fake.script(
        Reply(status=307, body=b"moved", headers={"Location": f"{elsewhere.url}/in"})
    )
    return env


async def test_api_redirect_is_a_502_and_is_not_followed(
    redirecting: contract.Env, elsewhere: Elsewhere
) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        await redirecting.edit()
    assert exc.value.status_code == 502
    assert exc.value.code == "upstream_error"
    assert "redirect" in exc.value.message
    assert elsewhere.url not in exc.value.response.text  # the Location is not echoed
    # Nothing reached the other host: no request, so no key and no image.
    assert elsewhere.received == []


async def test_streamed_call_redirect_is_not_followed(
    start_gateway: StartGateway, elsewhere: Elsewhere
) -> None:
    gateway = await start_gateway("openai")
    gateway.fake.script(
        Reply(status=307, body=b"", headers={"Location": elsewhere.url})
    )
    proxy = gateway.proxy
    form = aiohttp.FormData()
    for name, value in (("model", "openai/gpt-image-2"), ("prompt", "p")):
        form.add_field(name, value)
    form.add_field("stream", "true")
    form.add_field("image", png(), filename="a.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), data=form) as r,
    ):
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "upstream_error"
    assert elsewhere.received == []


async def test_token_endpoint_redirect_is_not_followed(
    start_proxy: StartProxy,
    aiohttp_server: AiohttpServer,
    elsewhere: Elsewhere,
    tmp_path: Path,
) -> None:
    private = new_key()
    fake = FakeVertex(private.public_key())
    add_redirect(fake.app, "/moved-token", f"{elsewhere.url}/token")
    server = await aiohttp_server(fake.app)
    key_path = tmp_path / "sa.json"
    key_path.write_bytes(key_file(private, str(server.make_url("/moved-token"))))
    proxy = await start_proxy(
        {"vertex": {"base_url": str(server.make_url("/v1")), "project": "p"}},
        environ={"GOOGLE_APPLICATION_CREDENTIALS": str(key_path)},
    )
    status, body, _ = await generate(proxy, None, "vertex/gemini-3.1-flash-image")
    assert status == 502, body
    # The signed assertion (good for an hour of tokens) never left for the other host.
    assert elsewhere.received == []


async def _bfl(
    start_gateway: StartGateway, elsewhere: Elsewhere
) -> tuple[FakeBFL, TestServer]:
    """A fake BFL whose own host has ``/moved`` (→ elsewhere), ``/hop`` (→ its own
    delivery path) and ``/internal.json``; only its own origin is allowed."""
    fake = FakeBFL(UPSTREAM_KEY)
    add_redirect(fake.app, "/moved", f"{elsewhere.url}/internal")
    add_redirect(fake.app, "/hop", "/delivery/j.png", status=302)

    async def internal(_: web.Request) -> web.Response:
        # Served as image/png: the type a host claims is not trusted, the bytes are.
        return web.Response(body=DOCUMENT, content_type="image/png")

    fake.app.router.add_get("/internal.json", internal)
    gateway = await start_gateway(
        "bfl", fake=fake, section=lambda s: {"allowed_hosts": [s.fake.url]}
    )
    return fake, gateway.proxy


async def test_bfl_polling_url_redirect_is_not_followed(
    start_gateway: StartGateway, elsewhere: Elsewhere
) -> None:
    fake, proxy = await _bfl(start_gateway, elsewhere)
    fake.script(Reply(body={"id": "j1", "polling_url": f"{fake.url}/moved"}))
    status, body, _ = await generate(proxy, None, BFL_MODEL)
    assert status == 502, body
    # The poll went to BFL's own host, with the key; its redirect was not followed.
    assert elsewhere.received == []


@pytest.mark.parametrize(
    ("sample", "why"),
    [
        ("/moved", "outside its allowed hosts"),
        ("/internal.json", "not a PNG, JPEG or WebP image"),
    ],
    ids=["redirect-elsewhere", "not-an-image"],
)
async def test_bfl_result_url_must_stay_home_and_be_an_image(
    start_gateway: StartGateway,
    elsewhere: Elsewhere,
    sample: str,
    why: str,
) -> None:
    fake, proxy = await _bfl(start_gateway, elsewhere)
    fake.sample = f"{fake.url}{sample}"
    status, body, _ = await generate(proxy, None, BFL_MODEL)
    assert status == 502, body
    assert why in body["error"]["message"]
    assert base64.b64encode(DOCUMENT).decode() not in str(body)
    assert elsewhere.received == []


async def test_bfl_result_redirect_on_its_own_host_is_followed_without_the_key(
    start_gateway: StartGateway, elsewhere: Elsewhere
) -> None:
    fake, proxy = await _bfl(start_gateway, elsewhere)
    fake.sample = f"{fake.url}/hop"
    status, body, _ = await generate(proxy, None, BFL_MODEL)
    assert status == 200, body
    assert base64.b64decode(body["data"][0]["b64_json"]) == OUTPUT_PNG
    # The fake's delivery path answers 400 to a request carrying x-key.
    assert fake.last.path == "/delivery/j.png"


async def _replicate(
    start_gateway: StartGateway, elsewhere: Elsewhere
) -> tuple[FakeReplicate, TestServer]:
    fake = FakeReplicate(UPSTREAM_KEY)
    add_redirect(fake.app, "/moved", f"{elsewhere.url}/internal")
    gateway = await start_gateway(
        "replicate", fake=fake, section=lambda s: {"output_hosts": [s.fake.url]}
    )
    return fake, gateway.proxy


@pytest.mark.parametrize("which", ["output", "get_url"])
async def test_replicate_urls_redirecting_elsewhere_are_not_followed(
    start_gateway: StartGateway,
    elsewhere: Elsewhere,
    which: str,
) -> None:
    fake, proxy = await _replicate(start_gateway, elsewhere)
    fake.sync = which == "output"
    setattr(fake, which, f"{fake.url}/moved")
    status, body, _ = await generate(proxy, None, REPLICATE_MODEL)
    assert status == 502, body
    assert elsewhere.received == []


@pytest.fixture
async def upstream(
    elsewhere: Elsewhere, registry: CollectorRegistry
) -> AsyncIterator[Upstream]:
    async with aiohttp.ClientSession() as session:
        yield Upstream(
            "bfl",
            base_url="http://127.0.0.1:1/v1",
            session=session,
            auth=StaticKey("x-key", UPSTREAM_KEY),
            key_env="BFL_API_KEY",
            metrics=Metrics(registry),
            max_response_bytes=1024 * 1024,
        )


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_upstream_sends_credentials_only_to_its_own_hosts(
    upstream: Upstream, elsewhere: Elsewhere, method: str
) -> None:
    # Whatever an adapter passes, an absolute URL off the provider's hosts gets no key.
    with pytest.raises(UpstreamProtocolError):
        await upstream.request(method, f"{elsewhere.url}/poll")
    assert elsewhere.received == []


async def test_a_path_cannot_change_the_api_host(upstream: Upstream) -> None:
    # Appended to base_url, "@host/..." would make the API's host the user part.
    with pytest.raises(AssertionError):
        upstream.url("@evil.example/steal")
    assert upstream.url("/images") == "http://127.0.0.1:1/v1/images"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.us1.bfl.ai/v1/get_result?id=1", True),
        ("https://api.us1.bfl.ai:443/x", True),  # the default port, spelled out
        ("https://api.us1.bfl.ai:8443/x", False),  # another port
        ("http://api.us1.bfl.ai/x", False),  # another scheme
        ("https://user@api.us1.bfl.ai/x", False),  # credentials in the URL
        ("https://evil.example#.bfl.ai", False),
        ("https://evil.example/?.bfl.ai", False),
        ("https://bfl.ai.evil.example/", False),
        ("https://evil.example\\@x.bfl.ai/", False),  # no valid URL at all
        ("ftp://x.bfl.ai/", False),
        ("https://[::1]/x", False),
    ],
)
def test_host_allowlist_checks_scheme_host_and_port(url: str, allowed: bool) -> None:
    assert host_allowed(url, ["https://*.bfl.ai"]) is allowed
