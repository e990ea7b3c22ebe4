"""``/metrics`` behind a bearer token (``metrics.token_env``): key names and spend are
not for whoever reaches the port. Open by default, as documented."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import openai
from aiohttp.test_utils import TestServer

from tests.conftest import UPSTREAM_KEY, StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import KEY_A, key_entry
from tests.images import png
from tests.integration.test_cli import run

TOKEN = "metrics-token-for-prometheus"
ENV = "IMAGEGATE_METRICS_TOKEN"


async def _scrape(proxy: TestServer, auth: str | None) -> tuple[int, str]:
    headers = {"Authorization": auth} if auth is not None else {}
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.make_url("/metrics"), headers=headers) as r,
    ):
        return r.status, await r.text()


async def _spend(proxy: TestServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key=KEY_A, max_retries=0
    ) as sdk:
        await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x")


async def test_scrape_needs_the_token(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, ENV: TOKEN},
        keys={"team-a": key_entry(KEY_A)},
        metrics={"token_env": ENV},
    )
    await _spend(proxy)
    # Anyone who reaches the port: no token, a wrong one, the client key, no scheme.
    for auth in (None, "Bearer wrong", f"Bearer {KEY_A}", TOKEN, "Bearer "):
        status, text = await _scrape(proxy, auth)
        assert status == 401, auth
        assert "team-a" not in text
        assert "imagegate_" not in text
        assert TOKEN not in text
    status, text = await _scrape(proxy, f"bearer {TOKEN}")
    assert status == 200
    assert 'key="team-a"' in text
    assert "imagegate_cost_usd_total" in text


async def test_open_by_default(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy({"openai": {"base_url": fake_openai.url}})  # type: ignore[attr-defined]
    status, text = await _scrape(proxy, None)
    assert status == 200
    assert "imagegate_requests_total" in text


async def test_token_env_unset_refuses_every_scrape(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, ENV: ""},
        metrics={"token_env": ENV},
    )
    for auth in (None, "Bearer ", "Bearer x"):
        status, _ = await _scrape(proxy, auth)
        assert status == 401


async def test_cli_refuses_to_start_without_the_token(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"providers:\n  openai: {{}}\nmetrics:\n  token_env: {ENV}\n")
    env = {k: v for k, v in clean_env.items() if k != ENV}
    code, _, err = await run("--config", str(config), "--port", "0", env=env)
    assert code == 2
    assert ENV in err


async def test_non_utf8_token_is_refused_not_a_crash(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    """A header byte that is not UTF-8 (aiohttp keeps it as a lone surrogate) was a
    500 from encoding it for the hash; it is a 401 like any other wrong token."""
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, ENV: TOKEN},
        metrics={"token_env": ENV},
    )
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:600]
    assert b"invalid_metrics_token" in answer
