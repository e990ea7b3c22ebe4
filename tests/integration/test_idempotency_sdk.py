"""The official ``openai`` SDK sends ``Idempotency-Key`` (``extra_headers=``) on a call
it retries after its own timeout: the provider is slow the first time, the SDK gives up
and retries, and the gateway answers the retry from the first run (one provider call,
one charge), for a JSON generation and for a multipart edit (whose retry has a new
multipart boundary)."""

from __future__ import annotations

import aiohttp
import openai
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import CLIENT_KEY, StartGateway
from tests.fakes.openai import Reply
from tests.gateway import key_entry, metric
from tests.images import png

COST = 0.04045  # one gpt-image-1 reply of the fake (tests/integration/test_key_limits)


@pytest.mark.parametrize("call", ["generate", "edit"])
async def test_sdk_retry_after_timeout_is_answered_from_the_first_run(
    start_gateway: StartGateway, registry: CollectorRegistry, call: str
) -> None:
    gateway = await start_gateway(
        keys={"team": key_entry(CLIENT_KEY, budget_usd_day=5.0)}
    )
    gateway.fake.script(Reply(delay_s=2.0))  # the first call outlasts the SDK
    client = openai.AsyncOpenAI(
        base_url=str(gateway.proxy.make_url("/v3")),
        api_key=CLIENT_KEY,
        timeout=0.75,
        max_retries=5,
    )
    gateway.clients.append(client)
    headers = {"Idempotency-Key": f"sdk-{call}-1"}
    if call == "generate":
        result = await client.images.generate(
            model="openai/gpt-image-1", prompt="a cat", extra_headers=headers
        )
    else:
        result = await client.images.edit(
            model="openai/gpt-image-1",
            prompt="a hat",
            image=("a.png", png(8, 8, seed=3), "image/png"),
            extra_headers=headers,
        )
    assert result.data
    assert result.data[0].b64_json
    assert result.model_extra is not None
    assert result.model_extra["cost"] == pytest.approx(COST)
    assert len(gateway.fake.received) == 1
    outcome = "imagegate_idempotency_requests_total"
    assert metric(registry, outcome, outcome="replayed") >= 1
    assert metric(registry, outcome, outcome="stored") == 1
    # One charge: the key's spend is the one call's cost.
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with (
        aiohttp.ClientSession() as s,
        s.get(gateway.proxy.make_url("/v3/usage"), headers=auth) as r,
    ):
        usage = await r.json()
    assert usage["day"]["spent_usd"] == pytest.approx(COST)
