"""Client keys through HTTP: 401 without a valid key, 403 outside the key's models."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from tests.conftest import UPSTREAM_KEY, StartProxy, leftover_files
from tests.fakes.openai import FakeOpenAI
from tests.gateway import (
    KEY_A,
    KEY_B,
    edit_multipart,
    generate,
    get_text,
    key_entry,
    metric,
    sdk_for,
)
from tests.images import png, sized_png


@pytest.fixture
async def keyed(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> TestServer:
    return await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        keys={
            "team-a": key_entry(KEY_A),
            "team-b": key_entry(KEY_B, models=["openai/gpt-image-2.6-*"]),
        },
    )


async def test_wrong_key_is_401_in_openai_shape(
    keyed: TestServer, fake_openai: FakeOpenAI, registry: CollectorRegistry
) -> None:
    async with sdk_for(keyed, "igk-not-a-key") as sdk:
        with pytest.raises(openai.AuthenticationError) as exc:
            await sdk.images.generate(model="openai/gpt-image-2", prompt="a cat")
    assert exc.value.status_code == 401
    assert exc.value.type == "authentication_error"
    assert exc.value.code == "invalid_api_key"
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert fake_openai.received == []
    assert (
        metric(registry, "imagegate_rejected_requests_total", reason="unauthorized")
        == 1
    )


async def test_missing_key_is_401(keyed: TestServer, fake_openai: FakeOpenAI) -> None:
    status, body, headers = await generate(keyed, None)
    assert status == 401
    assert body["error"]["code"] == "missing_api_key"
    assert headers["WWW-Authenticate"] == "Bearer"
    assert fake_openai.received == []


@pytest.mark.parametrize(
    "pairs",
    [
        # Two Authorization headers: which one wins depends on who reads them.
        [("Authorization", f"Bearer {KEY_A}"), ("Authorization", f"Bearer {KEY_B}")],
        [("Authorization", f"Bearer {KEY_B}"), ("x-api-key", KEY_A)],
        [("api-key", KEY_A), ("x-api-key", KEY_B)],
    ],
)
async def test_two_different_keys_are_refused(
    keyed: TestServer, fake_openai: FakeOpenAI, pairs: list[tuple[str, str]]
) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            keyed.make_url("/v3/images/generations"),
            json={"model": "openai/gpt-image-2", "prompt": "a cat"},
            headers=CIMultiDict(pairs),
        ) as r,
    ):
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "ambiguous_api_key"
    assert fake_openai.received == []


async def test_the_same_key_twice_is_one_key(
    keyed: TestServer, fake_openai: FakeOpenAI
) -> None:
    headers = CIMultiDict([("Authorization", f"Bearer {KEY_A}"), ("x-api-key", KEY_A)])
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            keyed.make_url("/v3/images/generations"),
            json={"model": "openai/gpt-image-2", "prompt": "a cat"},
            headers=headers,
        ) as r,
    ):
        assert r.status == 200


@pytest.mark.parametrize("header", ["api-key", "x-api-key", "Authorization"])
async def test_key_accepted_in_each_header(
    keyed: TestServer, fake_openai: FakeOpenAI, header: str
) -> None:
    value = f"Bearer {KEY_A}" if header == "Authorization" else KEY_A
    async with sdk_for(keyed, "unused") as sdk:
        sdk.api_key = ""
        result = await sdk.images.generate(
            model="openai/gpt-image-2",
            prompt="a cat",
            extra_headers={"Authorization": "", header: value},
        )
    assert result.data
    # The client's key never goes upstream; the gateway's own key does.
    sent = fake_openai.last.headers
    assert sent["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert not any(KEY_A in v for v in sent.values())


async def test_model_outside_key_patterns_is_403(
    keyed: TestServer, fake_openai: FakeOpenAI, registry: CollectorRegistry
) -> None:
    async with sdk_for(keyed, KEY_B) as sdk:
        ok = await sdk.images.edit(
            model="openai/gpt-image-2.6-flare",
            image=("a.png", png(), "image/png"),
            prompt="hat",
        )
        assert ok.data
        with pytest.raises(openai.PermissionDeniedError) as exc:
            await sdk.images.edit(
                model="openai/gpt-image-2",
                image=("a.png", png(), "image/png"),
                prompt="hat",
            )
    assert exc.value.status_code == 403
    assert exc.value.param == "model"
    assert exc.value.code == "model_not_allowed"
    assert "team-b" in exc.value.message
    assert len(fake_openai.received) == 1
    assert (
        metric(registry, "imagegate_rejected_requests_total", reason="forbidden") == 1
    )
    labels = {"route": "/v3/images/edits", "provider": "none", "code_class": "4xx"}
    assert metric(registry, "imagegate_requests_total", key="team-b", **labels) == 1


async def test_key_name_labels_logs_and_cost_never_the_key(
    keyed: TestServer,
    fake_openai: FakeOpenAI,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="imagegate.access")
    status, body, _ = await generate(keyed, KEY_A)
    assert status == 200
    assert body["cost"] > 0
    entries = [r for r in caplog.records if r.name == "imagegate.access"]
    assert [r.fields["key"] for r in entries] == ["team-a"]  # type: ignore[attr-defined]
    assert KEY_A not in caplog.text
    cost = {"provider": "openai", "model": "openai/gpt-image-2", "key": "team-a"}
    assert metric(registry, "imagegate_cost_usd_total", **cost) == body["cost"]
    metrics_text = await get_text(keyed, "/metrics")
    assert 'key="team-a"' in metrics_text
    assert KEY_A not in metrics_text


async def test_refused_upload_is_not_spooled(
    keyed: TestServer, fake_openai: FakeOpenAI, temp_root: Path
) -> None:
    status, body, _ = await edit_multipart(keyed, "igk-wrong", sized_png(200_000))
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    assert fake_openai.received == []
    assert leftover_files(temp_root) == []
