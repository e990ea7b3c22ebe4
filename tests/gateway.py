"""Helpers for the gateway-control tests: client keys, a held upstream, a real Redis."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import openai
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from tests.fakes.openai import FakeOpenAI
from tests.images import png
from tests.observability.procs import require_binary

KEY_A = "igk-team-a-secret"
KEY_B = "igk-team-b-secret"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_entry(key: str, **rules: Any) -> dict[str, Any]:
    return {"sha256": sha(key), **rules}


def providers_for(
    primary: FakeOpenAI, backup: FakeOpenAI | None = None
) -> dict[str, Any]:
    """``openai`` on one fake; ``backup`` (an OpenAI-compatible type) on another."""
    providers: dict[str, Any] = {"openai": {"base_url": primary.url}}  # type: ignore[attr-defined]
    if backup is not None:
        providers["backup"] = {"type": "openai", "base_url": backup.url}  # type: ignore[attr-defined]
    return providers


def sdk_for(proxy: TestServer, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key=key, max_retries=0
    )


async def generate(
    proxy: TestServer, key: str | None, model: str = "openai/gpt-image-2", **extra: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One JSON generation through raw aiohttp: status, body, headers."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/generations"),
            json={"model": model, "prompt": "a cat", **extra},
            headers=headers,
        ) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


async def edit_multipart(
    proxy: TestServer, key: str | None, image: bytes | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    form = aiohttp.FormData()
    form.add_field("model", "openai/gpt-image-2")
    form.add_field("prompt", "a hat")
    form.add_field("image", image or png(), filename="a.png", content_type="image/png")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), data=form, headers=headers) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def edit_body(model: str, images: int = 1, **fields: Any) -> dict[str, Any]:
    """A JSON edit request with ``images`` distinct data-URL images."""
    refs = [{"image_url": data_url(png(8, 8, seed=i))} for i in range(images)]
    return {"model": model, "prompt": "a hat", "images": refs, **fields}


async def post_json(
    server: TestServer, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(server.make_url(path), json=body) as r,
    ):
        return r.status, await r.json()


async def get_text(server: TestServer, path: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(server.make_url(path)) as r:
        return await r.text()


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within_s: float = 10
) -> None:
    """Poll ``check`` until it is true; fail after ``within_s`` (a bound, not a claim)."""
    for _ in range(int(within_s / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


@dataclass
class Gate:
    """Holds every request to a fake upstream until ``open()``; counts arrivals."""

    arrived: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)
    _arrival: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self, app: web.Application) -> None:
        @web.middleware
        async def hold(request: web.Request, handler: Any) -> web.StreamResponse:
            self.arrived += 1
            self._arrival.set()
            await self.released.wait()
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.append(hold)

    def open(self) -> None:
        self.released.set()

    async def wait_for(self, n: int) -> None:
        while self.arrived < n:
            self._arrival.clear()
            await self._arrival.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _spawn_redis(port: int, directory: str) -> subprocess.Popen[bytes]:
    binary = require_binary("redis-server")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return proc
        assert proc.poll() is None, "redis-server exited at start"
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.02)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    directory: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """A fresh, empty redis-server on the same port."""
        self.process = _spawn_redis(self.port, self.directory)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server on a free port (the Debian package's binary)."""
    port = free_port()
    directory = tempfile.mkdtemp(prefix="imagegate-redis-")
    server = RedisServer(port, _spawn_redis(port, directory), directory)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.kill()
        shutil.rmtree(directory, ignore_errors=True)
