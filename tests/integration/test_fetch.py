"""image_url fetching: hostile URLs refused before any fetch, allowed ones fetched
over real TLS and sent upstream as bytes."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from tests.conftest import UPSTREAM_KEY, AiohttpServer, build_config
from tests.fakes.images_host import ImageHost, MapResolver
from tests.fakes.openai import FakeOpenAI, Reply
from tests.gateway import providers_for

Start = Callable[..., Awaitable[TestServer]]
NAMES = {
    "images.test": ["127.0.0.1"],
    "localhost.test": ["127.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "private.test": ["10.1.2.3"],
    "mixed.test": ["93.184.216.34", "192.168.0.10"],
    "v6loop.test": ["::1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "cgnat.test": ["100.100.1.1"],
}


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def host(aiohttp_server: AiohttpServer, ca: trustme.CA) -> ImageHost:
    image_host = ImageHost()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("images.test", "rebind.test", "127.0.0.1").configure_cert(ctx)
    server = await aiohttp_server(image_host.app, ssl=ctx)
    image_host.port = server.port  # type: ignore[attr-defined]
    return image_host


@pytest.fixture
def start(
    aiohttp_server: AiohttpServer,
    registry: CollectorRegistry,
    temp_root: Path,
    fake_openai: FakeOpenAI,
    ca_file: str,
) -> Start:
    async def go(resolver: MapResolver | None = None, **fetch: Any) -> TestServer:
        settings = {"ca_file": ca_file, "max_bytes": 1_000_000, "timeout_s": 1.0}
        config = build_config(
            temp_root,
            {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
            fetch={**settings, **fetch},
        )
        app = create_app(
            config,
            environ={"OPENAI_API_KEY": UPSTREAM_KEY},
            registry=registry,
            fetch_resolver=resolver or MapResolver(NAMES),
        )
        return await aiohttp_server(app)

    return go


async def _edit(
    proxy: TestServer, url: str, *, mask: str | None = None
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {
        "model": "openai/gpt-image-2",
        "prompt": "hat",
        "images": [{"image_url": url}],
    }
    if mask is not None:
        body["mask"] = {"image_url": mask}
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/images/edits"), json=body)
        return resp.status, await resp.json()


def _sent_image(fake: FakeOpenAI, key: str = "images") -> bytes:
    sent = fake.last.json
    assert sent is not None
    ref = sent[key][0] if key == "images" else sent[key]
    url: str = ref["image_url"]
    assert url.startswith("data:image/")
    return base64.b64decode(url.partition(",")[2])


async def test_allowlisted_host_is_fetched_over_tls(
    start: Start, host: ImageHost, fake_openai: FakeOpenAI
) -> None:
    proxy = await start(allow_hosts=["images.test"])
    status, body = await _edit(proxy, f"https://images.test:{host.port}/cat.png")  # type: ignore[attr-defined]
    assert status == 200, body
    assert _sent_image(fake_openai) == host.image
    assert host.paths == ["/cat.png"]


async def test_allowlisted_network_and_redirect_within_it(
    start: Start, host: ImageHost, fake_openai: FakeOpenAI
) -> None:
    proxy = await start(allow_networks=["127.0.0.0/8"])
    base = f"https://images.test:{host.port}"  # type: ignore[attr-defined]
    status, body = await _edit(proxy, f"{base}/redirect?to={base}/cat.png")
    assert status == 200, body
    assert _sent_image(fake_openai) == host.image
    assert host.paths == [f"/redirect?to={base}/cat.png", "/cat.png"]


async def test_connection_goes_to_the_checked_address(
    start: Start, host: ImageHost, fake_openai: FakeOpenAI
) -> None:
    # A rebinding resolver: a second query would answer with the metadata address.
    resolver = MapResolver(
        {"rebind.test": ["127.0.0.1"]}, later={"rebind.test": ["169.254.169.254"]}
    )
    proxy = await start(resolver, allow_networks=["127.0.0.1/32"])
    status, body = await _edit(proxy, f"https://rebind.test:{host.port}/cat.png")  # type: ignore[attr-defined]
    assert status == 200, body
    assert resolver.queries == ["rebind.test"]
    assert _sent_image(fake_openai) == host.image


HOSTILE = [
    # Literal loopback in every notation (all point at the live image host).
    ("https://127.0.0.1:{port}/cat.png", "loopback"),
    ("https://127.0.0.1.:{port}/cat.png", "loopback"),
    ("https://2130706433:{port}/cat.png", "loopback"),
    ("https://0x7f000001:{port}/cat.png", "loopback"),
    ("https://0177.0.0.1:{port}/cat.png", "loopback"),
    ("https://0x7f.0.0.1:{port}/cat.png", "loopback"),
    ("https://127.1:{port}/cat.png", "loopback"),
    ("https://127.0.1:{port}/cat.png", "loopback"),
    ("https://[::1]:{port}/cat.png", "loopback"),
    ("https://[::ffff:127.0.0.1]:{port}/cat.png", "loopback"),
    ("https://[::ffff:7f00:1]:{port}/cat.png", "loopback"),
    ("https://[0:0:0:0:0:ffff:127.0.0.1]:{port}/cat.png", "loopback"),
    ("https://[::127.0.0.1]:{port}/cat.png", "loopback"),
    ("https://[2002:7f00:1::]:{port}/cat.png", "loopback"),
    ("https://[64:ff9b::127.0.0.1]:{port}/cat.png", "loopback"),
    # Names that resolve to loopback and to other non-public addresses.
    ("https://localhost.test:{port}/cat.png", "loopback"),
    ("https://v6loop.test:{port}/cat.png", "loopback"),
    ("https://private.test/cat.png", "private"),
    ("https://mixed.test/cat.png", "private"),
    ("https://mapped.test/cat.png", "private"),
    ("https://cgnat.test/cat.png", "CGNAT"),
    ("https://metadata.test/latest/meta-data/", "metadata"),
    ("https://nowhere.test/cat.png", "does not resolve"),
    # Metadata, private, and other ranges as literals.
    ("https://169.254.169.254/latest/meta-data/", "metadata"),
    ("https://2852039166/latest/meta-data/", "metadata"),
    ("https://0xa9fea9fe/latest/meta-data/", "metadata"),
    ("https://0251.0376.0251.0376/latest/", "metadata"),
    ("https://169.254.43518/latest/", "metadata"),
    ("https://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ("https://[::ffff:169.254.169.254]/latest/", "metadata"),
    ("https://[64:ff9b::a9fe:a9fe]/latest/", "metadata"),
    ("https://168.63.129.16/machine", "metadata"),
    ("https://169.254.1.1/", "link-local"),
    ("https://[fe80::1]/", "link-local"),
    ("https://10.0.0.1/", "private"),
    ("https://172.16.5.4/", "private"),
    ("https://192.168.1.1/", "private"),
    ("https://[fc00::1]/", "private"),
    ("https://[fec0::1]/", "site-local"),
    ("https://100.64.0.1/", "CGNAT"),
    ("https://0.0.0.0/", "unspecified"),
    ("https://0/", "unspecified"),
    ("https://[::]/", "unspecified"),
    ("https://224.0.0.1/", "multicast"),
    ("https://[ff02::1]/", "multicast"),
    ("https://240.0.0.1/", "reserved"),
    ("https://255.255.255.255/", "reserved"),
    ("https://192.0.2.1/", "private"),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    ("https://1.2.3.256/", "not a valid address"),
    ("https://08.1.1.1/", "not a valid address"),
    # Malformed URLs.
    ("https://[::1/cat.png", "not a valid URL"),
    ("https:///cat.png", "no host"),
    ("https://:443/cat.png", "not a valid URL"),
    # Scheme and credentials.
    ("http://images.test:{port}/cat.png", "only https"),
    ("https://user:pw@images.test:{port}/cat.png", "credentials"),
    # Redirects to what is refused (the redirect hop itself is the only fetch).
    ("https://images.test:{port}/redirect?to=https://127.0.0.1:{port}/cat.png", "loopback"),
    ("https://images.test:{port}/redirect?to=https://169.254.169.254/", "metadata"),
    ("https://images.test:{port}/redirect?to=https://private.test/", "private"),
    ("https://images.test:{port}/redirect?to=http://images.test:{port}/cat.png", "only https"),
    ("https://images.test:{port}/redirect?to=file:///etc/passwd", "scheme"),
    # What the allowed host sends back.
    ("https://images.test:{port}/big", "larger than"),
    ("https://images.test:{port}/chunked", "larger than"),
    ("https://images.test:{port}/slow", "did not arrive within"),
    ("https://images.test:{port}/page.html", "not a PNG, JPEG or WebP"),
    ("https://images.test:{port}/gzip", "not a PNG, JPEG or WebP"),
    ("https://images.test:{port}/missing", "HTTP 404"),
]  # fmt: skip


@pytest.mark.parametrize(("template", "reason"), HOSTILE)
async def test_hostile_url_is_refused(
    start: Start,
    host: ImageHost,
    fake_openai: FakeOpenAI,
    template: str,
    reason: str,
) -> None:
    # Only "images.test" is allowed (it stands for a company's own image store, and
    # is what the redirect and body cases are served from); nothing else is.
    proxy = await start(allow_hosts=["images.test"])
    url = template.format(port=host.port)  # type: ignore[attr-defined]
    status, body = await _edit(proxy, url)
    assert status == 400, body
    error = body["error"]
    assert error["param"] == "images[0].image_url"
    assert error["message"].startswith("'images[0].image_url'")
    assert reason in error["message"]
    assert fake_openai.received == []
    # The host saw at most the hop the test aimed at it, never a refused target.
    assert host.paths in ([], [url.split(str(host.port), 1)[-1]]), host.paths  # type: ignore[attr-defined]
    if "redirect" not in url and "images.test" not in url:
        assert host.paths == []


async def test_allowlisted_host_still_cannot_reach_metadata(
    start: Start, host: ImageHost
) -> None:
    resolver = MapResolver({"images.test": ["169.254.169.254"]})
    proxy = await start(resolver, allow_hosts=["images.test"])
    status, body = await _edit(proxy, "https://images.test/cat.png")
    assert status == 400
    assert "metadata" in body["error"]["message"]


async def test_too_many_redirects(start: Start, host: ImageHost) -> None:
    proxy = await start(allow_hosts=["images.test"], max_redirects=1)
    base = f"https://images.test:{host.port}"  # type: ignore[attr-defined]
    inner = f"{base}/redirect?to={base}/cat.png"
    status, body = await _edit(proxy, f"{base}/redirect?to={inner}")
    assert status == 400
    assert "more than 1 redirects" in body["error"]["message"]
    assert "/cat.png" not in host.paths


async def test_http_only_by_config_and_tls_is_verified(
    start: Start, host: ImageHost, fake_openai: FakeOpenAI
) -> None:
    proxy = await start(allow_hosts=["images.test"], allow_http=True, ca_file=None)
    # http is now allowed, but the host speaks TLS; https fails certificate checks
    # because the test CA is no longer trusted.
    status, body = await _edit(proxy, f"https://images.test:{host.port}/cat.png")  # type: ignore[attr-defined]
    assert status == 400
    assert "TLS verification failed" in body["error"]["message"]
    status, body = await _edit(proxy, f"http://images.test:{host.port}/cat.png")  # type: ignore[attr-defined]
    assert status == 400
    assert "could not be fetched" in body["error"]["message"]
    assert fake_openai.received == []


async def test_mask_url_must_be_png(start: Start, host: ImageHost) -> None:
    proxy = await start(allow_hosts=["images.test"])
    base = f"https://images.test:{host.port}"  # type: ignore[attr-defined]
    status, body = await _edit(proxy, f"{base}/cat.png", mask=f"{base}/photo.jpg")
    assert status == 400
    assert body["error"]["param"] == "mask.image_url"
    assert "must be a PNG" in body["error"]["message"]


async def test_several_urls_are_fetched_and_a_refusal_names_its_image(
    start: Start, host: ImageHost, fake_openai: FakeOpenAI
) -> None:
    proxy = await start(allow_hosts=["images.test"])
    base = f"https://images.test:{host.port}"  # type: ignore[attr-defined]
    body: dict[str, Any] = {
        "model": "openai/gpt-image-2",
        "prompt": "hat",
        "images": [
            {"image_url": f"{base}/cat.png"},
            {"image_url": f"{base}/photo.jpg"},
        ],
        "mask": {"image_url": f"{base}/cat.png"},
    }
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/images/edits"), json=body)
        assert resp.status == 200, await resp.text()
        sent = fake_openai.last.json
        assert sent is not None
        assert [r["image_url"][:15] for r in sent["images"]] == [
            "data:image/png;",
            "data:image/jpeg",
        ]
        assert sent["mask"]["image_url"].startswith("data:image/png;")
        body["images"].append({"image_url": "https://10.0.0.1/x.png"})
        resp = await client.post(proxy.make_url("/v3/images/edits"), json=body)
        error = (await resp.json())["error"]
    assert resp.status == 400
    assert error["param"] == "images[2].image_url"
    assert len(fake_openai.received) == 1


async def test_fallback_reuses_the_fetched_image(
    aiohttp_server: AiohttpServer,
    registry: CollectorRegistry,
    temp_root: Path,
    fake_openai: FakeOpenAI,
    ca_file: str,
    host: ImageHost,
) -> None:
    # Inputs are resolved once per request: the fallback sends the bytes the primary
    # was sent, without fetching the URL again.
    backup = FakeOpenAI(UPSTREAM_KEY)
    backup.url = str((await aiohttp_server(backup.app)).make_url("/v1"))  # type: ignore[attr-defined]
    config = build_config(
        temp_root,
        providers_for(fake_openai, backup),
        fetch={"ca_file": ca_file, "allow_hosts": ["images.test"]},
        fallbacks={"openai/gpt-image-2": ["backup/gpt-image-2"]},
    )
    app = create_app(
        config,
        environ={"OPENAI_API_KEY": UPSTREAM_KEY},
        registry=registry,
        fetch_resolver=MapResolver(NAMES),
    )
    proxy = await aiohttp_server(app)
    fake_openai.script(Reply(status=500, body={"error": {"message": "down"}}))
    status, body = await _edit(proxy, f"https://images.test:{host.port}/cat.png")  # type: ignore[attr-defined]
    assert status == 200, body
    assert body["provider"] == "backup"
    assert _sent_image(fake_openai) == _sent_image(backup) == host.image
    assert host.paths == ["/cat.png"]
