from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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
from tests.gateway import Gate

UPSTREAM_KEY = "sk-upstream-test"
CLIENT_KEY = "client-key-never-forwarded"

AiohttpServer = Callable[..., Awaitable[TestServer]]
StartProxy = Callable[..., Awaitable[TestServer]]


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
async def fake_openai(aiohttp_server: AiohttpServer) -> FakeOpenAI:
    fake = FakeOpenAI(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1"))  # type: ignore[attr-defined]
    return fake


def build_config(temp_root: Path, providers: dict[str, Any], **sections: Any) -> Config:
    raw: dict[str, Any] = {"providers": providers, **sections}
    raw.setdefault("limits", {})["temp_dir"] = str(temp_root)
    return parse_config(msgspec.json.encode(raw))


@pytest.fixture
async def held(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[FakeOpenAI, Gate]]:
    """A fake OpenAI whose requests wait at a gate the test opens."""
    fake, gate = FakeOpenAI(UPSTREAM_KEY), Gate()
    gate.install(fake.app)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1"))  # type: ignore[attr-defined]
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
