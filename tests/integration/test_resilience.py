"""Retries, fallbacks and circuit breakers through HTTP, counted at fake upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import UPSTREAM_KEY, AiohttpServer, StartProxy, leftover_files
from tests.fakes.openai import FakeOpenAI, Reply
from tests.gateway import edit_multipart, free_port, generate, metric, sdk_for
from tests.images import png

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05}


@pytest.fixture
async def backup(aiohttp_server: AiohttpServer) -> FakeOpenAI:
    fake = FakeOpenAI(UPSTREAM_KEY)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1"))  # type: ignore[attr-defined]
    return fake


def _providers(primary: FakeOpenAI, backup: FakeOpenAI | None = None) -> dict[str, Any]:
    providers: dict[str, Any] = {"openai": {"base_url": primary.url}}  # type: ignore[attr-defined]
    if backup is not None:
        providers["backup"] = {"type": "openai", "base_url": backup.url}  # type: ignore[attr-defined]
    return providers


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_within_bound_is_retried(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    registry: CollectorRegistry,
    status: int,
) -> None:
    proxy = await start_proxy(_providers(fake_openai), retry=FAST)
    fake_openai.script(Reply(status=status, body={"error": {"message": "busy"}},
                             headers={"Retry-After": "0"}))  # fmt: skip
    code, body, _ = await generate(proxy, None)
    assert code == 200
    assert body["provider"] == "openai"
    assert len(fake_openai.received) == 2
    labels = {"provider": "openai", "reason": str(status)}
    assert metric(registry, "imagegate_upstream_retries_total", **labels) == 1


async def test_long_retry_after_goes_back_to_the_client(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(_providers(fake_openai), retry=FAST)
    fake_openai.script(Reply(status=429, body={"error": {"message": "slow down"}},
                             headers={"Retry-After": "60"}))  # fmt: skip
    async with sdk_for(proxy, "k") as sdk:
        with pytest.raises(openai.RateLimitError) as exc:
            await sdk.images.generate(model="openai/gpt-image-1", prompt="a cat")
    assert exc.value.response.headers["Retry-After"] == "60"
    assert len(fake_openai.received) == 1


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(status=500, body={"error": {"message": "boom"}}), 502),
        (Reply(status=503, body={"error": {"message": "no retry-after"}}), 502),
        (Reply(drop=True), 502),  # the body was sent; a response may have begun
    ],
    ids=["500", "503-without-retry-after", "dropped-after-send"],
)
async def test_nothing_is_retried_once_the_provider_had_the_request(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, reply: Reply, status: int
) -> None:
    proxy = await start_proxy(_providers(fake_openai), retry=FAST)
    fake_openai.script(reply, Reply())
    code, _, _ = await generate(proxy, None)
    assert code == status
    assert len(fake_openai.received) == 1


async def test_timeout_after_sending_is_not_retried(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    provider = {"base_url": fake_openai.url, "pool": {"read_timeout_s": 0.2}}  # type: ignore[attr-defined]
    proxy = await start_proxy({"openai": provider}, retry=FAST)
    fake_openai.script(Reply(delay_s=1.0), Reply())
    code, body, _ = await generate(proxy, None)
    assert (code, body["error"]["code"]) == (504, "upstream_timeout")
    assert len(fake_openai.received) == 1


async def test_refused_connection_is_retried_up_to_attempts(
    start_proxy: StartProxy, registry: CollectorRegistry
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proxy = await start_proxy({"openai": {"base_url": dead}}, retry=FAST)
    code, body, _ = await generate(proxy, None)
    assert (code, body["error"]["code"]) == (502, "upstream_unavailable")
    labels = {"provider": "openai", "reason": "connect"}
    assert metric(registry, "imagegate_upstream_retries_total", **labels) == 2
    outcome = {"provider": "openai", "outcome": "error"}
    assert metric(registry, "imagegate_upstream_requests_total", **outcome) == 3


async def test_multipart_retry_rebuilds_the_form_from_temp_files(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    proxy = await start_proxy(_providers(fake_openai), retry=FAST)
    fake_openai.script(Reply(status=503, headers={"Retry-After": "0"}), Reply())
    image = png(64, 64, seed=7)
    code, _, _ = await edit_multipart(proxy, None, image)
    assert code == 200
    first, second = fake_openai.received
    assert [f.data for f in first.files] == [f.data for f in second.files] == [image]
    assert first.fields == second.fields
    assert leftover_files(temp_root) == []


async def test_fallback_answers_when_primary_fails(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    backup: FakeOpenAI,
    registry: CollectorRegistry,
    temp_root: Path,
) -> None:
    proxy = await start_proxy(
        _providers(fake_openai, backup),
        fallbacks={"openai/gpt-image-1": ["backup/gpt-image-1-mini"]},
    )
    fake_openai.script(Reply(status=500, body={"error": {"message": "down"}}))
    image = png(8, 8, seed=3)
    async with sdk_for(proxy, "k") as sdk:
        result = await sdk.images.edit(
            model="openai/gpt-image-1",
            image=("a.png", image, "image/png"),
            prompt="hat",
        )
    assert result.model_extra is not None
    assert result.model_extra["provider"] == "backup"
    assert len(fake_openai.received) == 1
    assert backup.last.fields["model"] == ["gpt-image-1-mini"]
    assert [f.data for f in backup.last.files] == [image]
    labels = {"from_provider": "openai", "to_provider": "backup"}
    assert metric(registry, "imagegate_fallbacks_total", **labels) == 1
    assert leftover_files(temp_root) == []


async def test_client_errors_do_not_fall_back(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backup: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        _providers(fake_openai, backup),
        fallbacks={"openai/gpt-image-1": ["backup/gpt-image-1"]},
    )
    fake_openai.script(Reply(status=400, body={"error": {"message": "bad prompt"}}))
    code, body, _ = await generate(proxy, None)
    assert (code, body["error"]["message"]) == (400, "bad prompt")
    assert backup.received == []


@pytest.mark.parametrize(
    ("replies", "status"),
    [
        ([Reply(status=500), Reply(status=502)], 502),
        ([Reply(status=429, headers={"Retry-After": "30"}),
          Reply(status=429, headers={"Retry-After": "20"})], 429),
    ],
    ids=["5xx", "rate-limited"],
)  # fmt: skip
async def test_all_failing_aggregates_the_causes(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    backup: FakeOpenAI,
    replies: list[Reply],
    status: int,
) -> None:
    proxy = await start_proxy(
        _providers(fake_openai, backup),
        fallbacks={"openai/gpt-image-1": ["backup/gpt-image-1"]},
        retry={"max_retry_after_s": 0},
    )
    fake_openai.script(replies[0])
    backup.script(replies[1])
    code, body, headers = await generate(proxy, None)
    assert code == status
    err = body["error"]
    assert err["code"] == "all_providers_failed"
    assert err["message"].startswith("every provider for model 'openai/gpt-image-1'")
    assert "openai: " in err["message"]
    assert "backup: " in err["message"]
    if status == 429:
        assert headers["Retry-After"] == "20"


async def test_all_timing_out_is_504(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backup: FakeOpenAI
) -> None:
    pool = {"read_timeout_s": 0.2}
    providers = _providers(fake_openai, backup)
    for section in providers.values():
        section["pool"] = pool
    proxy = await start_proxy(
        providers, fallbacks={"openai/gpt-image-1": ["backup/gpt-image-1"]}
    )
    fake_openai.script(Reply(delay_s=1.0))
    backup.script(Reply(delay_s=1.0))
    code, body, _ = await generate(proxy, None)
    assert (code, body["error"]["code"]) == (504, "all_providers_failed")
    assert (len(fake_openai.received), len(backup.received)) == (1, 1)


async def test_connect_timeout_is_retried(
    start_proxy: StartProxy, registry: CollectorRegistry
) -> None:
    # A listener that never accepts, its backlog filled: new connects hang in SYN.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        for f in fillers:
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                f.connect(("127.0.0.1", port))
        try:
            provider = {
                "base_url": f"http://127.0.0.1:{port}/v1",
                "pool": {"connect_timeout_s": 0.2},
            }
            proxy = await start_proxy(
                {"openai": provider}, retry=FAST | {"attempts": 2}
            )
            code, body, _ = await generate(proxy, None)
        finally:
            for f in fillers:
                f.close()
    assert (code, body["error"]["code"]) == (504, "upstream_timeout")
    assert "did not accept a connection" in body["error"]["message"]
    labels = {"provider": "openai", "reason": "connect"}
    assert metric(registry, "imagegate_upstream_retries_total", **labels) == 1


async def test_retry_stops_at_the_deadline(
    start_proxy: StartProxy, registry: CollectorRegistry
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    retry = {"backoff_base_s": 5.0, "backoff_max_s": 5.0, "deadline_s": 0.001}
    proxy = await start_proxy({"openai": {"base_url": dead}}, retry=retry)
    assert (await generate(proxy, None))[0] == 502
    labels = {"provider": "openai", "reason": "connect"}
    assert metric(registry, "imagegate_upstream_retries_total", **labels) == 0


async def test_fallback_the_key_may_not_use_is_skipped(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backup: FakeOpenAI
) -> None:
    from tests.gateway import key_entry

    proxy = await start_proxy(
        _providers(fake_openai, backup),
        fallbacks={"openai/gpt-image-1": ["backup/gpt-image-1"]},
        keys={"team": key_entry("k-team", models=["openai/*"])},
    )
    fake_openai.script(Reply(status=503))
    code, body, _ = await generate(proxy, "k-team")
    assert code == 502
    assert "backup: not allowed for this key" in body["error"]["message"]
    assert backup.received == []


async def test_breaker_opens_and_recovers(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, registry: CollectorRegistry
) -> None:
    proxy = await start_proxy(
        _providers(fake_openai), breaker={"failures": 2, "cooldown_s": 0.2}
    )
    state = {"provider": "openai"}
    fake_openai.script(Reply(status=500), Reply(status=500), Reply(status=500))
    assert [(await generate(proxy, None))[0] for _ in range(2)] == [502, 502]
    assert metric(registry, "imagegate_circuit_state", **state) == 1
    code, body, headers = await generate(proxy, None)
    assert (code, body["error"]["code"]) == (503, "circuit_open")
    assert int(headers["Retry-After"]) >= 1
    assert len(fake_openai.received) == 2  # refused without a call
    # After the cool-down one probe goes through; it fails, so the circuit reopens.
    await asyncio.sleep(0.25)
    assert (await generate(proxy, None))[0] == 502
    assert metric(registry, "imagegate_circuit_state", **state) == 1
    assert (await generate(proxy, None))[1]["error"]["code"] == "circuit_open"
    # The next probe succeeds and closes it.
    await asyncio.sleep(0.25)
    assert (await generate(proxy, None))[0] == 200
    assert metric(registry, "imagegate_circuit_state", **state) == 0
    assert (await generate(proxy, None))[0] == 200
    assert len(fake_openai.received) == 5


async def test_open_circuit_falls_back_without_calling_the_provider(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backup: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        _providers(fake_openai, backup),
        fallbacks={"openai/gpt-image-1": ["backup/gpt-image-1"]},
        breaker={"providers": {"openai": {"failures": 1, "cooldown_s": 60}}},
    )
    fake_openai.script(Reply(status=502))
    first = await generate(proxy, None)
    second = await generate(proxy, None)
    assert (first[1]["provider"], second[1]["provider"]) == ("backup", "backup")
    assert len(fake_openai.received) == 1
    assert len(backup.received) == 2
