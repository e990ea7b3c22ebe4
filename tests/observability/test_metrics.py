"""Every metric family moves as documented after real requests through the proxy."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from proxy.state import TEMP_DIR
from tests.conftest import StartProxy
from tests.fakes.openai import FakeOpenAI, Reply
from tests.fakes.sse import StreamPlan
from tests.images import png, sized_png
from tests.observability.scrape import scrape, value

EDITS = "/v3/images/edits"


async def test_success_accounts_cost_tokens_bytes_and_connections(
    sdk: openai.AsyncOpenAI, proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    image = png(64, 64)
    for _ in range(2):
        await sdk.images.edit(
            model="openai/gpt-image-2.5-sunburst",
            image=("a.png", image, "image/png"),
            prompt="hat",
        )
    m = await scrape(proxy)
    base = {"provider": "openai", "model": "openai/gpt-image-2.5-sunburst"}
    assert value(m, "imagegate_cost_usd_total", **base, key="anonymous") > 0
    assert value(m, "imagegate_tokens_total", **base, kind="input_text") == 20
    assert value(m, "imagegate_tokens_total", **base, kind="input_image") == 80
    assert value(m, "imagegate_tokens_total", **base, kind="output_image") == 2000
    assert value(m, "imagegate_images_returned_total", provider="openai") == 2
    assert value(
        m, "imagegate_requests_total", route=EDITS, code_class="2xx", key="anonymous"
    ) == 2  # fmt: skip
    # Exactly the multipart bodies the fake received: the form's bytes, whether sent
    # with their length or forwarded chunked (not the chunk framing).
    lengths = [r.size for r in fake_openai.received]
    assert min(lengths) > len(image)
    assert value(m, "imagegate_upstream_sent_bytes_total", provider="openai") == sum(
        lengths
    )
    assert value(m, "imagegate_upstream_received_bytes_total", provider="openai") > 0
    created = value(m, "imagegate_upstream_connections_total", kind="created")
    reused = value(m, "imagegate_upstream_connections_total", kind="reused")
    assert (created, reused) == (1, 1)
    assert value(m, "imagegate_overhead_seconds_count", route=EDITS) == 2
    assert value(m, "imagegate_upstream_duration_seconds_count", provider="openai") == 2
    assert value(m, "imagegate_upload_bytes_total") == 2 * len(image)
    assert value(m, "imagegate_temp_file_bytes") == 0
    assert value(m, "imagegate_inflight_requests") == 0
    assert value(m, "imagegate_circuit_state", provider="openai") == 0
    assert (
        "imagegate_upstream_retries_total",
        frozenset({("provider", "openai")}),
    ) in m


async def test_unknown_model_is_priced_as_other(
    sdk: openai.AsyncOpenAI, proxy: TestServer
) -> None:
    await sdk.images.edit(
        model="openai/not-in-the-price-table",
        image=("a.png", png(), "image/png"),
        prompt="hat",
    )
    m = await scrape(proxy)
    assert value(m, "imagegate_unpriced_responses_total", model="other") == 1
    assert (
        value(m, "imagegate_tokens_total", model="other", kind="output_image") == 1000
    )
    assert not any("not-in-the-price-table" in str(k) for k in m)


async def test_temp_bytes_and_inflight_while_upstream_holds(
    sdk: openai.AsyncOpenAI, proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    hold, arrived = asyncio.Event(), asyncio.Event()
    fake_openai.script(Reply(hold=hold, arrived=arrived))
    image = sized_png(5 * 1024 * 1024)  # past the in-memory spool budget: on disk
    call = asyncio.ensure_future(
        sdk.images.edit(
            model="openai/gpt-image-2.5-sunburst",
            image=("a.png", image, "image/png"),
            prompt="x",
        )
    )
    await arrived.wait()
    during = await scrape(proxy)
    on_disk = proxy.app[TEMP_DIR].bytes_on_disk()
    hold.set()
    await call
    after = await scrape(proxy)
    assert value(during, "imagegate_inflight_requests") == 1
    assert value(during, "imagegate_temp_file_bytes") == len(image)
    # What was held in memory before the part overflowed was given back.
    assert value(during, "imagegate_spooled_bytes") == 0
    assert on_disk == len(image)
    assert proxy.app[TEMP_DIR].bytes_on_disk() == 0
    assert value(after, "imagegate_temp_file_bytes") == 0
    assert value(after, "imagegate_inflight_requests") == 0


@pytest.mark.parametrize(
    ("reply", "kind", "sdk_error"),
    [
        (Reply(status=500, body={"error": {"message": "boom"}}), "unavailable",
         openai.InternalServerError),
        (Reply(drop=True), "unavailable", openai.InternalServerError),
        (Reply(status=429, body={"error": {"message": "slow down"}}), "rate_limited",
         openai.RateLimitError),
        (Reply(status=400, body={"error": {"message": "bad", "type": "invalid_request_error"}}),
         "rejected", openai.BadRequestError),
        (Reply(body=b"not json"), "protocol", openai.InternalServerError),
    ],
)  # fmt: skip
async def test_upstream_errors_by_kind(
    sdk: openai.AsyncOpenAI,
    proxy: TestServer,
    fake_openai: FakeOpenAI,
    reply: Reply,
    kind: str,
    sdk_error: type[Exception],
) -> None:
    fake_openai.script(reply)
    with pytest.raises(sdk_error):
        await sdk.images.edit(
            model="openai/gpt-image-2.5-sunburst",
            image=("a.png", png(), "image/png"),
            prompt="x",
        )
    m = await scrape(proxy)
    assert (
        value(m, "imagegate_upstream_errors_total", provider="openai", kind=kind) == 1
    )
    assert value(m, "imagegate_upstream_errors_total") == 1
    assert value(m, "imagegate_rejected_requests_total") == 0


async def test_upstream_auth_error_kind(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        environ={"OPENAI_API_KEY": "sk-wrong"},
    )
    async with aiohttp.ClientSession() as s:
        body = {"model": "openai/gpt-image-2.5-sunburst", "prompt": "x"}
        async with s.post(proxy.make_url("/v3/images/generations"), json=body) as r:
            assert r.status == 502
    m = await scrape(proxy)
    assert value(m, "imagegate_upstream_errors_total", kind="auth") == 1


async def test_rejected_requests_by_reason(proxy: TestServer) -> None:
    url = proxy.make_url(EDITS)
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=b"x", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415
        body = {"model": "nope/x", "prompt": "p"}
        gen = proxy.make_url("/v3/images/generations")
        async with s.post(gen, json=body) as r:
            assert r.status == 404
        async with s.post(url, json={"model": 3}) as r:
            assert r.status == 400
    m = await scrape(proxy)
    assert (
        value(m, "imagegate_rejected_requests_total", reason="unsupported_media_type")
        == 1
    )
    assert value(m, "imagegate_rejected_requests_total", reason="unknown_model") == 1
    assert value(m, "imagegate_rejected_requests_total", reason="invalid_request") == 1
    assert value(m, "imagegate_requests_total", code_class="4xx", provider="none") == 3
    assert value(m, "imagegate_upstream_errors_total") == 0


@pytest.mark.parametrize(
    "plan",
    [StreamPlan(partials=1, drop=True), StreamPlan(partials=1, error=True)],
    ids=["dropped", "provider-error-event"],
)
async def test_upstream_failure_mid_stream_is_counted(
    sdk: openai.AsyncOpenAI,
    proxy: TestServer,
    fake_openai: FakeOpenAI,
    plan: StreamPlan,
) -> None:
    # The reply started (a partial image went out), so the error leaves as a stream
    # error event rather than through the middleware; it is counted all the same.
    fake_openai.streams.append(plan)
    stream = await sdk.images.edit(
        model="openai/gpt-image-2",
        image=("a.png", png(), "image/png"),
        prompt="hat",
        stream=True,
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    m = await scrape(proxy)
    assert value(m, "imagegate_upstream_errors_total", provider="openai") == 1
    assert value(m, "imagegate_rejected_requests_total") == 0
