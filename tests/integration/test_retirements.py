"""Retired and deprecated models on the request path: 410 before any upstream call,
the remap with its header, and the Deprecation and Sunset headers before shutdown.
Retired ids here are on purpose (retired-id: lifecycle test)."""

from __future__ import annotations

import calendar
import datetime as dt

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from proxy.catalogue.load import Catalogue
from tests.conftest import StartGateway

CAT = Catalogue.load_default()
# Every retired catalogue model of a provider type whose adapter takes any model id.
RETIRED = [
    key for key, _ in CAT.items()
    if CAT.status(key) == "shutdown" and key.split("/")[0] != "azure"
]  # fmt: skip


def test_the_catalogue_has_retired_models_of_every_kind() -> None:
    kinds = {key.split("/")[0] for key in RETIRED}
    assert {"openai", "google", "vertex", "amazon", "xai"} <= kinds


async def _post(
    proxy_url: str, path: str, body: dict[str, object]
) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as client:
        resp = await client.post(
            proxy_url + path, json=body, headers={"Authorization": "Bearer k"}
        )
        return resp.status, dict(resp.headers), await resp.json()


@pytest.mark.parametrize("key", RETIRED)
async def test_a_retired_model_is_410_without_an_upstream_call(
    start_gateway: StartGateway, key: str
) -> None:
    kind = key.split("/", 1)[0]
    gateway = await start_gateway(kind, catalogue={})
    url = str(gateway.proxy.make_url("/v3"))
    status, _, body = await _post(
        url, "/images/generations", {"model": key, "prompt": "a boat"}
    )
    assert status == 410
    error = body["error"]
    assert error["code"] == "model_retired"
    assert error["param"] == "model"
    life = CAT.lifecycle(key)
    assert str(life.shutdown) in error["message"]
    for replacement in life.replacements():
        assert f"{kind}/{replacement}" in error["message"]
    assert gateway.served.fake.received == []


async def test_remap_sends_the_replacement_and_says_so(
    start_gateway: StartGateway, registry: CollectorRegistry
) -> None:
    gateway = await start_gateway("openai", lifecycle="remap", catalogue={})
    sdk = gateway.sdk()
    raw = await sdk.images.with_raw_response.generate(
        model="openai/gpt-image-1", prompt="a boat"
    )
    assert raw.headers["Imagegate-Model-Remapped"] == (
        "openai/gpt-image-1; to=openai/gpt-image-2.5-sunburst"
    )
    assert gateway.served.fake.last.json["model"] == "gpt-image-2.5-sunburst"
    assert (
        registry.get_sample_value(
            "imagegate_deprecated_model_requests_total", {"model": "openai/gpt-image-1"}
        )
        == 1
    )


async def test_a_deprecated_model_carries_deprecation_and_sunset(
    start_gateway: StartGateway, registry: CollectorRegistry
) -> None:
    life = {"deprecated": "2026-11-01", "shutdown": "2099-01-01"}
    gateway = await start_gateway(
        "openai", catalogue={"openai": {"gpt-image-2": {"lifecycle": life}}}
    )
    sdk = gateway.sdk()
    gen = sdk.images.with_raw_response.generate
    await gen(model="openai/gpt-image-2", prompt="a boat")
    raw = await gen(model="openai/gpt-image-2", prompt="a boat")
    seconds = calendar.timegm(dt.date(2026, 11, 1).timetuple())
    assert raw.headers["Deprecation"] == f"@{seconds}"
    assert raw.headers["Sunset"] == "Thu, 01 Jan 2099 00:00:00 GMT"
    assert (
        registry.get_sample_value(
            "imagegate_deprecated_model_requests_total", {"model": "openai/gpt-image-2"}
        )
        == 2
    )


async def test_a_current_model_has_neither_header(start_gateway: StartGateway) -> None:
    gateway = await start_gateway("openai")
    raw = await gateway.sdk().images.with_raw_response.generate(
        model="openai/gpt-image-2", prompt="x"
    )
    assert "Deprecation" not in raw.headers
    assert "Sunset" not in raw.headers
