"""Every fake provider, keyed by its ``ProviderConfig`` type tag: how to serve it and the
config section and environment that point the proxy at it.

The one place that knows how each fake is wired to the proxy, so the "fake provider +
proxy" fixture (``start_gateway`` in ``tests/conftest.py``) and the contract suite
share it instead of each test module repeating it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.azure import FakeAzure
from tests.fakes.bedrock import AWS_ENV, FakeBedrock
from tests.fakes.bfl import FakeBFL
from tests.fakes.google import FakeGemini
from tests.fakes.openai import FakeOpenAI
from tests.fakes.provider import LOCAL
from tests.fakes.replicate import FakeReplicate
from tests.fakes.stabilityai import FakeStability
from tests.fakes.vertex import FakeVertex, key_file, new_key
from tests.fakes.xai import FakeXAI

UPSTREAM_KEY = "sk-upstream-test"

AiohttpServer = Callable[..., Awaitable[TestServer]]


@dataclass
class Served:
    """A running fake and what the proxy needs to reach it."""

    kind: str  # the provider type tag
    fake: Any  # has script(), received, error_body() (FakeOpenAI: no error_body)
    server: TestServer
    section: dict[str, Any]  # the provider's config section, without "type"
    environ: dict[str, str] = field(default_factory=dict)


Serve = Callable[[AiohttpServer, Path, Any], Awaitable[Served]]


def _origin(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def _openai(aiohttp_server: AiohttpServer, tmp: Path, fake: Any) -> Served:
    fake = fake or FakeOpenAI(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1"))
    return Served("openai", fake, server, {"base_url": fake.url},
                  {"OPENAI_API_KEY": UPSTREAM_KEY})  # fmt: skip


async def _azure(aiohttp_server: AiohttpServer, tmp: Path, fake: Any) -> Served:
    fake = fake or FakeAzure(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = _origin(server)
    section = {"base_url": fake.url, "deployments": {"house": "gpt-image-2"}}
    return Served(
        "azure", fake, server, section, {"AZURE_OPENAI_API_KEY": UPSTREAM_KEY}
    )


async def _google(aiohttp_server: AiohttpServer, tmp: Path, fake: Any) -> Served:
    fake = fake or FakeGemini(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1beta"))
    return Served("google", fake, server, {"base_url": fake.url},
                  {"GEMINI_API_KEY": UPSTREAM_KEY})  # fmt: skip


@functools.cache
def service_account_key() -> rsa.RSAPrivateKey:
    """One RSA key for every Vertex fake of the run: generating one takes a while."""
    return new_key()


async def _vertex(aiohttp_server: AiohttpServer, tmp: Path, fake: Any) -> Served:
    # A fake given by the caller brings its own credentials (e.g. an access token).
    private = None if fake else service_account_key()
    fake = fake or FakeVertex(private.public_key() if private else None)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1"))
    environ: dict[str, str] = {}
    if private is not None:
        key_path = tmp / "service-account.json"
        key_path.write_bytes(key_file(private, str(server.make_url("/token"))))
        environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(key_path)
    section = {"base_url": fake.url, "project": "test-project", "location": "global"}
    return Served("vertex", fake, server, section, environ)


async def _stabilityai(aiohttp_server: AiohttpServer, tmp: Path, fake: Any) -> Served:
    fake = fake or FakeStability(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url(""))
    return Served("stabilityai", fake, server, {"base_url": fake.url},
                  {"STABILITY_API_KEY": UPSTREAM_KEY})  # fmt: skip


async def _bfl(aiohttp_server: AiohttpServer, tmp: Path, fake: Any) -> Served:
    fake = fake or FakeBFL(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = _origin(server)
    section = {"base_url": f"{fake.url}/v1", "poll_interval_s": 0.01,
               "allowed_hosts": LOCAL}  # fmt: skip
    return Served("bfl", fake, server, section, {"BFL_API_KEY": UPSTREAM_KEY})


async def _replicate(aiohttp_server: AiohttpServer, tmp: Path, fake: Any) -> Served:
    fake = fake or FakeReplicate(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = _origin(server)
    section = {"base_url": f"{fake.url}/v1", "poll_interval_s": 0.01,
               "output_hosts": LOCAL}  # fmt: skip
    return Served("replicate", fake, server, section,
                  {"REPLICATE_API_TOKEN": UPSTREAM_KEY})  # fmt: skip


async def _amazon(aiohttp_server: AiohttpServer, tmp: Path, fake: Any) -> Served:
    fake = fake or FakeBedrock()
    server = await aiohttp_server(fake.app)
    fake.url = _origin(server)
    return Served("amazon", fake, server, {"base_url": fake.url}, dict(AWS_ENV))


async def _xai(aiohttp_server: AiohttpServer, tmp: Path, fake: Any) -> Served:
    fake = fake or FakeXAI(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1"))
    return Served("xai", fake, server, {"base_url": fake.url},
                  {"XAI_API_KEY": UPSTREAM_KEY})  # fmt: skip


FAKES: dict[str, Serve] = {
    "openai": _openai,
    "azure": _azure,
    "google": _google,
    "vertex": _vertex,
    "stabilityai": _stabilityai,
    "bfl": _bfl,
    "replicate": _replicate,
    "amazon": _amazon,
    "xai": _xai,
}
