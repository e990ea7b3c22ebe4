from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from blockbuster import BlockBuster, blockbuster_ctx
from prometheus_client import CollectorRegistry, generate_latest

from proxy.app import create_app
from proxy.config import Config, parse_config
from proxy.logs import JsonFormatter
from tests.fakes.bedrock import SECRET_KEY, SESSION_TOKEN
from tests.fakes.openai import FakeOpenAI
from tests.fakes.registry import FAKES, UPSTREAM_KEY, AiohttpServer, Served
from tests.gateway import Gate

__all__ = ["UPSTREAM_KEY", "AiohttpServer"]

CLIENT_KEY = "client-key-never-forwarded"

StartProxy = Callable[..., Awaitable[TestServer]]
ServeFake = Callable[..., Awaitable[Served]]


class SecretAudit(logging.Handler):
    """Collects every log line, response and metrics exposition the suite produces."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.texts: list[str] = []
        self.registries: list[CollectorRegistry] = []
        self.responses = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))

    async def on_response(self, request: web.Request, resp: web.StreamResponse) -> None:
        self.responses += 1
        self.texts.append(str(dict(resp.headers)))
        body = getattr(resp, "body", None)
        if isinstance(body, bytes):
            self.texts.append(body.decode("utf-8", "replace"))


# The fakes' AWS secret key and session token, and the GCP access tokens they mint.
SECRETS = (
    UPSTREAM_KEY,
    CLIENT_KEY,
    "sk-wrong",
    SECRET_KEY,
    SESSION_TOKEN,
    "ya29.fake-",
)


@pytest.fixture(scope="session", autouse=True)
def secret_audit() -> Iterator[SecretAudit]:
    """Fails the run if a configured key shows up in any log, response or metric."""
    audit = SecretAudit()
    root = logging.getLogger()
    level = root.level
    root.addHandler(audit)
    root.setLevel(logging.DEBUG)
    try:
        yield audit
    finally:
        root.removeHandler(audit)
        root.setLevel(level)
    audit.texts.extend(generate_latest(r).decode() for r in audit.registries)
    leaks = [t[:200] for t in audit.texts for s in SECRETS if s in t]
    assert not leaks, f"secrets leaked: {leaks[:5]}"


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    # Any blocking file or socket call on the event loop fails the test.
    with blockbuster_ctx("proxy", excluded_modules=["openai", "httpx2", "tests"]) as bb:
        yield bb


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def temp_root(tmp_path: Path) -> Path:
    root = tmp_path / "proxy-tmp"
    root.mkdir()
    return root


def leftover_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def serve_fake(aiohttp_server: AiohttpServer, tmp_path: Path) -> ServeFake:
    """Starts the fake for a provider type (or the given fake instance)."""

    async def serve(kind: str = "openai", fake: Any = None) -> Served:
        return await FAKES[kind](aiohttp_server, tmp_path, fake)

    return serve


@pytest.fixture
async def fake_openai(serve_fake: ServeFake) -> FakeOpenAI:
    fake: FakeOpenAI = (await serve_fake("openai")).fake
    return fake


# retired-id: bridge: the amazon adapter calls only Nova Canvas, retired with no
# successor on Bedrock, so tests of that adapter run it as an operator would,
# un-retired in config; the result-links test needs a model that answers URLs itself.
# A test of retirement itself passes its own `catalogue` (such as {}).
BRIDGE_CATALOGUE: dict[str, Any] = {
    "amazon": {"amazon.nova-canvas-v1:0": {"lifecycle": {"released": "2025-01-01"}}},
    # The result-links test needs a model that answers URLs itself (dall-e-3).
    "openai": {"dall-e-3": {"lifecycle": {"released": "2025-01-01"}}},
}


def build_config(temp_root: Path, providers: dict[str, Any], **sections: Any) -> Config:
    sections.setdefault("catalogue", BRIDGE_CATALOGUE)
    raw: dict[str, Any] = {"providers": providers, **sections}
    raw.setdefault("limits", {})["temp_dir"] = str(temp_root)
    return parse_config(msgspec.json.encode(raw))


@pytest.fixture
async def held(serve_fake: ServeFake) -> AsyncIterator[tuple[FakeOpenAI, Gate]]:
    """A fake OpenAI whose requests wait at a gate the test opens."""
    fake, gate = FakeOpenAI(UPSTREAM_KEY), Gate()
    gate.install(fake.app)
    await serve_fake("openai", fake)
    yield fake, gate
    gate.open()


@pytest.fixture
def start_proxy(
    aiohttp_server: AiohttpServer,
    registry: CollectorRegistry,
    temp_root: Path,
    secret_audit: SecretAudit,
) -> StartProxy:
    async def start(
        providers: dict[str, Any],
        *,
        environ: dict[str, str] | None = None,
        **sections: Any,
    ) -> TestServer:
        config = build_config(temp_root, providers, **sections)
        env = {"OPENAI_API_KEY": UPSTREAM_KEY} if environ is None else environ
        app: web.Application = create_app(config, environ=env, registry=registry)
        app.on_response_prepare.append(secret_audit.on_response)
        secret_audit.registries.append(registry)
        return await aiohttp_server(
            app, keepalive_timeout=config.server.keepalive_timeout_s
        )

    return start


@dataclass
class Gateway:
    """A fake provider and the proxy configured for it."""

    served: Served
    proxy: TestServer
    clients: list[openai.AsyncOpenAI] = field(default_factory=list)

    @property
    def fake(self) -> Any:
        return self.served.fake

    def sdk(self, key: str = CLIENT_KEY) -> openai.AsyncOpenAI:
        """The official SDK pointed at the proxy; closed when the test ends."""
        client = openai.AsyncOpenAI(
            base_url=str(self.proxy.make_url("/v3")), api_key=key, max_retries=0
        )
        self.clients.append(client)
        return client


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(
    serve_fake: ServeFake, start_proxy: StartProxy
) -> AsyncIterator[StartGateway]:
    """The one "fake provider + proxy" fixture, by provider type.

    ``section`` overrides keys of the provider's config section (or is a function of
    the served fake giving them, for values such as its URL; None drops a key back to
    the config default); ``name`` configures
    it under another name (with ``type``); ``fake`` serves a prepared fake instance;
    ``environ`` replaces the fake's environment; other keywords are config sections.
    """
    started: list[Gateway] = []

    async def start(
        kind: str = "openai",
        *,
        section: dict[str, Any] | Callable[[Served], dict[str, Any]] | None = None,
        name: str | None = None,
        fake: Any = None,
        environ: dict[str, str] | None = None,
        **sections: Any,
    ) -> Gateway:
        served = await serve_fake(kind, fake)
        overrides = section(served) if callable(section) else section
        body = {**served.section, **(overrides or {})}
        body = {k: v for k, v in body.items() if v is not None}
        if name is not None:
            body = {"type": kind, **body}
        env = served.environ if environ is None else environ
        proxy = await start_proxy({name or kind: body}, environ=env, **sections)
        started.append(Gateway(served, proxy))
        return started[-1]

    yield start
    for gateway in started:
        for client in gateway.clients:
            await client.close()


@pytest.fixture
async def proxy(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> TestServer:
    return await start_proxy({"openai": {"base_url": fake_openai.url}})  # type: ignore[attr-defined]


@pytest.fixture
async def sdk(proxy: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key=CLIENT_KEY, max_retries=0
    )
    yield client
    await client.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
