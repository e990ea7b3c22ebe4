"""Aliases, ``allowed_models`` and ``GET /images/models`` through a running proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.config import ConfigError, parse_config
from tests.conftest import UPSTREAM_KEY, StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.images import png


async def _get(server: TestServer, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(server.make_url(path)) as r:
        return r.status, await r.json()


async def _sdk_edit(server: TestServer, model: str) -> Any:
    async with openai.AsyncOpenAI(
        base_url=str(server.make_url("/v3")), api_key="c", max_retries=0
    ) as sdk:
        return await sdk.images.edit(
            model=model, image=("a.png", png(), "image/png"), prompt="hat"
        )


@pytest.fixture
async def routed(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> TestServer:
    return await start_proxy(
        {
            "openai": {"base_url": fake_openai.url},  # type: ignore[attr-defined]
            "azure": {
                "base_url": "https://r.openai.azure.com",
                "deployments": {
                    "house": "gpt-image-2",
                    "old": "gpt-image-2.5-sunburst",
                },
            },
        },
        environ={"OPENAI_API_KEY": UPSTREAM_KEY, "AZURE_OPENAI_API_KEY": "k"},
        models={"house-style": "openai/gpt-image-2"},
        allowed_models=["openai/gpt-image-2", "openai/gpt-image-2-*", "azure/house"],
    )


async def test_alias_routes_to_its_target(
    routed: TestServer, fake_openai: FakeOpenAI
) -> None:
    result = await _sdk_edit(routed, "house-style")
    assert result.model_extra is not None
    assert result.model_extra["provider"] == "openai"
    assert result.model_extra["cost"] is not None  # priced as openai/gpt-image-2
    assert fake_openai.last.fields["model"] == ["gpt-image-2"]


async def test_allowed_pattern_serves_matching_model(
    routed: TestServer, fake_openai: FakeOpenAI
) -> None:
    await _sdk_edit(routed, "openai/gpt-image-2-2026-04-21")
    assert fake_openai.last.fields["model"] == ["gpt-image-2-2026-04-21"]


@pytest.mark.parametrize(
    "model", ["openai/gpt-image-2.6-sunburst", "azure/old", "no-such-alias"]
)
async def test_forbidden_or_unknown_model_is_404(
    routed: TestServer, model: str
) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        await _sdk_edit(routed, model)
    assert exc.value.code == "model_not_found"
    assert exc.value.param == "model"
    assert "openai/gpt-image-2-*" in exc.value.message
    assert "house-style" in exc.value.message


async def test_unknown_provider_lists_providers_and_aliases(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    server = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        models={"house-style": "openai/gpt-image-2"},
    )
    with pytest.raises(openai.NotFoundError) as exc:
        await _sdk_edit(server, "gpt-image-2")
    assert "(openai)" in exc.value.message
    assert "house-style" in exc.value.message


@pytest.mark.parametrize("prefix", ["/v1", "/v3"])
async def test_models_lists_served_models_with_capabilities(
    routed: TestServer, prefix: str
) -> None:
    status, body = await _get(routed, f"{prefix}/images/models")
    assert status == 200
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert set(by_id) == {
        "openai/gpt-image-2",
        "openai/gpt-image-2-2026-04-21",
        "azure/house",
        "house-style",
    }
    assert by_id["house-style"]["alias_of"] == "openai/gpt-image-2"
    assert "alias_of" not in by_id["azure/house"]
    assert all(m["object"] == "model" for m in body["data"])
    assert by_id["azure/house"]["capabilities"] == {
        "edit": True, "generate": True, "mask": True, "max_images": 16,
        "streaming": False,
    }  # fmt: skip
    assert by_id["openai/gpt-image-2"]["provider"] == "openai"


async def test_models_without_restriction_lists_catalogued_models(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    server = await start_proxy({"openai": {"base_url": fake_openai.url}})  # type: ignore[attr-defined]
    _, body = await _get(server, "/v3/images/models")
    ids = [m["id"] for m in body["data"]]
    assert "openai/gpt-image-2.6-sunburst" in ids
    assert "openai/gpt-image-1.5" not in ids  # retired-id: shut down 2026-12-01
    assert all(i.startswith("openai/") for i in ids)


@pytest.mark.parametrize(
    ("models", "reason"),
    [
        ({"a": "nowhere/gpt-image-2"}, "not configured"),
        ({"a b": "openai/gpt-image-2"}, "non-empty word"),
        ({"a": "no-slash"}, "models"),
    ],
)
def test_bad_aliases_stop_the_start(
    tmp_path: Path, models: dict[str, str], reason: str
) -> None:
    raw = {"providers": {"openai": {}}, "models": models}
    with pytest.raises(ConfigError, match=reason):
        parse_config(msgspec.json.encode(raw))


async def test_models_lists_configured_names_of_every_adapter(
    start_proxy: StartProxy,
) -> None:
    server = await start_proxy(
        {"amazon": {"region": "us-west-2"}, "bfl": {}, "replicate": {}, "xai": {}},
        environ={},
    )
    _, body = await _get(server, "/v1/images/models")
    by_id = {m["id"]: m["capabilities"] for m in body["data"]}
    assert by_id["amazon/amazon.nova-canvas-v1:0"]["max_images"] == 5
    assert by_id["amazon/stability.sd3-5-large-v1:0"]["max_images"] == 1
    assert by_id["bfl/flux-pro-1.0-fill"] == {
        "edit": True, "generate": False, "mask": True, "max_images": 1,
        "streaming": False,
    }  # fmt: skip
    assert by_id["bfl/flux-pro-1.1"] == {
        "edit": False, "generate": True, "mask": False, "max_images": 0,
        "streaming": False,
    }  # fmt: skip
    assert by_id["bfl/flux-kontext-pro"]["mask"] is False
    assert "replicate/black-forest-labs/flux-kontext-pro" in by_id
    assert by_id["xai/grok-imagine-image"]["max_images"] == 3


async def test_sdk_models_list_sees_the_catalogue(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    # client.models.list() is what OpenAI SDK users call to discover models.
    for prefix in ("/v3", "/v1"):
        client = openai.AsyncOpenAI(
            base_url=str(proxy.make_url(prefix)), api_key="k", max_retries=0
        )
        async with client:
            page = await client.models.list()
        ids = [m.id for m in page.data]
        assert "openai/gpt-image-2" in ids
        model = next(m for m in page.data if m.id == "openai/gpt-image-2")
        assert model.owned_by == "openai"
        assert model.object == "model"
        assert model.created == 0
    assert fake_openai.received == []
