"""Fallbacks across two fake OpenAI-compatible providers, and circuit breakers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import (
    ServeFake,
    StartProxy,
    leftover_files,
)
from tests.fakes.openai import FakeOpenAI, Reply
from tests.gateway import generate, key_entry, metric, providers_for, sdk_for
from tests.images import png


@pytest.fixture
async def backup(serve_fake: ServeFake) -> FakeOpenAI:
    fake: FakeOpenAI = (await serve_fake("openai")).fake
    return fake


async def test_fallback_answers_when_primary_fails(
    start_proxy: StartProxy,
    fake_openai: FakeOpenAI,
    backup: FakeOpenAI,
    registry: CollectorRegistry,
    temp_root: Path,
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai, backup),
        fallbacks={"openai/gpt-image-2": ["backup/gpt-image-2.6-flare"]},
    )
    fake_openai.script(Reply(status=500, body={"error": {"message": "down"}}))
    image = png(8, 8, seed=3)
    async with sdk_for(proxy, "k") as sdk:
        result = await sdk.images.edit(
            model="openai/gpt-image-2",
            image=("a.png", image, "image/png"),
            prompt="hat",
        )
    assert result.model_extra is not None
    assert result.model_extra["provider"] == "backup"
    assert len(fake_openai.received) == 1
    assert backup.last.fields["model"] == ["gpt-image-2.6-flare"]
    assert [f.data for f in backup.last.files] == [image]
    labels = {"provider": "openai"}  # the provider that failed
    assert metric(registry, "imagegate_fallbacks_total", **labels) == 1
    assert leftover_files(temp_root) == []


async def test_client_errors_do_not_fall_back(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backup: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai, backup),
        fallbacks={"openai/gpt-image-2": ["backup/gpt-image-2"]},
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
        providers_for(fake_openai, backup),
        fallbacks={"openai/gpt-image-2": ["backup/gpt-image-2"]},
        retry={"max_retry_after_s": 0},
    )
    fake_openai.script(replies[0])
    backup.script(replies[1])
    code, body, headers = await generate(proxy, None)
    assert code == status
    err = body["error"]
    assert err["code"] == "all_providers_failed"
    assert err["message"].startswith("every provider for model 'openai/gpt-image-2'")
    assert "openai: " in err["message"]
    assert "backup: " in err["message"]
    if status == 429:
        assert headers["Retry-After"] == "20"


async def test_all_timing_out_is_504(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backup: FakeOpenAI
) -> None:
    pool = {"read_timeout_s": 0.2}
    providers = providers_for(fake_openai, backup)
    for section in providers.values():
        section["pool"] = pool
    proxy = await start_proxy(
        providers, fallbacks={"openai/gpt-image-2": ["backup/gpt-image-2"]}
    )
    fake_openai.script(Reply(delay_s=1.0))
    backup.script(Reply(delay_s=1.0))
    code, body, _ = await generate(proxy, None)
    assert (code, body["error"]["code"]) == (504, "all_providers_failed")
    assert (len(fake_openai.received), len(backup.received)) == (1, 1)


async def test_fallback_the_key_may_not_use_is_skipped(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backup: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai, backup),
        fallbacks={"openai/gpt-image-2": ["backup/gpt-image-2"]},
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
        providers_for(fake_openai), breaker={"failures": 2, "cooldown_s": 0.2}
    )
    state = {"provider": "openai"}
    fake_openai.script(Reply(status=500), Reply(status=500), Reply(status=500))
    assert [(await generate(proxy, None))[0] for _ in range(2)] == [502, 502]
    assert metric(registry, "imagegate_circuit_state", **state) == 2  # open
    code, body, headers = await generate(proxy, None)
    assert (code, body["error"]["code"]) == (503, "circuit_open")
    assert int(headers["Retry-After"]) >= 1
    assert len(fake_openai.received) == 2  # refused without a call
    # After the cool-down one probe goes through; it fails, so the circuit reopens.
    await asyncio.sleep(0.25)
    assert (await generate(proxy, None))[0] == 502
    assert metric(registry, "imagegate_circuit_state", **state) == 2  # open
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
        providers_for(fake_openai, backup),
        fallbacks={"openai/gpt-image-2": ["backup/gpt-image-2"]},
        breaker={"providers": {"openai": {"failures": 1, "cooldown_s": 60}}},
    )
    fake_openai.script(Reply(status=502))
    first = await generate(proxy, None)
    second = await generate(proxy, None)
    assert (first[1]["provider"], second[1]["provider"]) == ("backup", "backup")
    assert len(fake_openai.received) == 1
    assert len(backup.received) == 2


async def test_fallback_outside_allowed_models_is_skipped(
    start_proxy: StartProxy, fake_openai: FakeOpenAI, backup: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        providers_for(fake_openai, backup),
        fallbacks={"openai/gpt-image-2": ["backup/gpt-image-2"]},
        allowed_models=["openai/*"],
    )
    fake_openai.script(Reply(status=500))
    code, body, _ = await generate(proxy, None)
    assert (code, body["error"]["code"]) == (502, "all_providers_failed")
    assert (
        "backup: model 'backup/gpt-image-2' is not served" in body["error"]["message"]
    )
    assert backup.received == []
