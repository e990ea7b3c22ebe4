"""stream=true through the proxy, driven by the official OpenAI SDK and raw aiohttp."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from tests.conftest import UPSTREAM_KEY, StartProxy, build_config
from tests.fakes.openai import FakeOpenAI, Reply
from tests.fakes.sse import USAGE, StreamPlan, partial_b64
from tests.images import png

# gpt-image-2 token prices from proxy/catalog.yaml: 10 text + 40 image in, 1000 out.
EXPECTED_COST = round((10 * 5.00 + 40 * 8.00 + 1000 * 30.00) / 1e6, 8)


async def _edit_stream(sdk: openai.AsyncOpenAI, **kwargs: Any) -> Any:
    return await sdk.images.edit(
        model="openai/gpt-image-2",
        image=("a.png", png(), "image/png"),
        prompt="hat",
        stream=True,
        **kwargs,
    )


async def _collect(stream: Any, seen: list[str]) -> None:
    async for event in stream:
        seen.append(event.type)


async def test_sdk_stream_relays_partials_and_prices_completed(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.streams.append(StreamPlan(partials=2, partial_size=300_000))
    stream = await _edit_stream(sdk, partial_images=2)
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "image_edit.partial_image",
        "image_edit.partial_image",
        "image_edit.completed",
    ]
    # Large partial images (several network chunks each) pass through byte for byte.
    assert events[0].b64_json == partial_b64(0, 300_000)
    assert events[1].partial_image_index == 1
    completed = events[2]
    assert completed.usage.output_tokens == USAGE["output_tokens"]
    extra = completed.model_extra
    assert extra is not None
    assert extra["provider"] == "openai"
    assert extra["cost"] == pytest.approx(EXPECTED_COST)
    sent = fake_openai.last
    assert sent.fields["stream"] == ["true"]
    assert sent.fields["partial_images"] == ["2"]
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_events_reach_the_client_before_the_upstream_finishes(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    gate = asyncio.Event()
    plan = StreamPlan(partials=2, gate=gate)
    fake_openai.streams.append(plan)
    stream = await _edit_stream(sdk, partial_images=2)
    events = aiter(stream)
    # The upstream is parked after its first event until the test opens the gate, so
    # this first event can only arrive if the proxy relays without buffering.
    first = await asyncio.wait_for(anext(events), timeout=10)
    assert first.type == "image_edit.partial_image"
    assert plan.sent == ["image_edit.partial_image"]
    assert not plan.finished
    gate.set()
    rest = [e.type async for e in events]
    assert rest == ["image_edit.partial_image", "image_edit.completed"]
    assert plan.finished


async def test_generation_streams_with_done_and_crlf(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.streams.append(StreamPlan(partials=1, done=True, crlf=True))
    stream = await sdk.images.generate(
        model="openai/gpt-image-2", prompt="a cat", stream=True, partial_images=1
    )
    events = [e async for e in stream]
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    extra = events[-1].model_extra
    assert extra is not None
    assert extra["cost"] == pytest.approx(EXPECTED_COST)
    sent = fake_openai.last.json
    assert sent is not None
    assert sent["stream"] is True


async def test_upstream_error_event_is_relayed(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.streams.append(StreamPlan(partials=1, error=True))
    stream = await _edit_stream(sdk)
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="The server had an error"):
        await _collect(stream, seen)
    assert seen == ["image_edit.partial_image"]


async def test_upstream_error_event_ends_the_stream_once(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.streams.append(StreamPlan(partials=1, error=True))
    body = {"model": "openai/gpt-image-2", "prompt": "x", "stream": True}
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/images/generations"), json=body)
        text = await resp.text()
    # The provider's own error event is relayed; the proxy adds none of its own.
    assert text.count("event: error") == 1
    assert "The server had an error" in text


async def test_upstream_drop_after_start_ends_with_error_event(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.streams.append(StreamPlan(partials=1, drop=True))
    stream = await _edit_stream(sdk)
    seen: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        await _collect(stream, seen)
    assert seen == ["image_edit.partial_image"]
    assert isinstance(exc.value.body, dict)
    assert exc.value.body["code"] in ("upstream_unavailable", "upstream_protocol_error")
    assert "openai" in exc.value.message


async def test_upstream_refusal_before_start_is_a_json_error(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(status=400, body={"error": {"message": "bad prompt", "type":
              "invalid_request_error", "param": "prompt", "code": None}})
    )  # fmt: skip
    with pytest.raises(openai.BadRequestError) as exc:
        await _edit_stream(sdk)
    assert exc.value.param == "prompt"


async def test_json_reply_to_stream_request_becomes_completed_events(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    # An "OpenAI-compatible" upstream that ignores stream=true and answers JSON.
    fake_openai.streams.append(StreamPlan(as_json=True))
    stream = await _edit_stream(sdk)
    events = [e async for e in stream]
    assert [e.type for e in events] == ["image_edit.completed"]
    assert events[0].b64_json == partial_b64(9)
    extra = events[0].model_extra
    assert extra is not None
    assert extra["provider"] == "openai"


async def test_json_reply_that_is_not_images_is_a_502(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.streams.append(StreamPlan(as_json=True, json_body={"nothing": 1}))
    body = {"model": "openai/gpt-image-2", "prompt": "x", "stream": True}
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/images/generations"), json=body)
        text = await resp.text()
    assert resp.status == 502
    assert "unexpected reply" in text


async def _metric(proxy_url: str, name: str, labels: dict[str, str]) -> float:
    async with aiohttp.ClientSession() as client:
        text = await (await client.get(f"{proxy_url}/metrics")).text()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(params=[True, False], ids=["handler-cancellation", "write-failure"])
async def runner_proxy(
    request: pytest.FixtureRequest,
    fake_openai: FakeOpenAI,
    registry: CollectorRegistry,
    temp_root: Any,
) -> AsyncIterator[str]:
    # Both of aiohttp's behaviours on a client that goes away: the handler cancelled
    # (the test server's default), or left running until a write fails (run_app's).
    config = build_config(temp_root, {"openai": {"base_url": fake_openai.url}})  # type: ignore[attr-defined]
    app = create_app(
        config, environ={"OPENAI_API_KEY": UPSTREAM_KEY}, registry=registry
    )
    runner = web.AppRunner(app, handler_cancellation=request.param)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_client_disconnect_releases_upstream_and_is_recorded(
    runner_proxy: str, fake_openai: FakeOpenAI
) -> None:
    gate = asyncio.Event()
    plan = StreamPlan(partials=2, gate=gate, keep_writing=True)
    fake_openai.streams.append(plan)
    labels = {"provider": "openai", "model": "openai/gpt-image-2"}
    unpriced_before = await _metric(
        runner_proxy, "imagegate_unpriced_responses_total", labels
    )
    client = openai.AsyncOpenAI(
        base_url=f"{runner_proxy}/v3", api_key="k", max_retries=0
    )
    stream = await _edit_stream(client)
    first = await asyncio.wait_for(anext(aiter(stream)), timeout=10)
    assert first.type == "image_edit.partial_image"
    await stream.close()
    await client.close()
    gate.set()
    # The fake keeps writing until the proxy drops the upstream connection.
    for _ in range(500):
        if plan.reader_gone:
            break
        await asyncio.sleep(0.01)
    assert plan.reader_gone
    assert not plan.finished
    closed = 0.0
    for _ in range(500):
        closed = await _metric(
            runner_proxy, "imagegate_requests_total", {"code_class": "4xx"}
        )
        if closed:
            break
        await asyncio.sleep(0.01)
    assert closed == 1
    assert (
        await _metric(
            runner_proxy, "imagegate_upstream_requests_total", {"outcome": "aborted"}
        )
        == 1
    )
    # No completed event arrived, so the cost is unknown: counted as unpriced.
    unpriced = await _metric(runner_proxy, "imagegate_unpriced_responses_total", labels)
    assert unpriced == unpriced_before + 1


async def test_client_leaving_after_completed_still_records_cost(
    runner_proxy: str, fake_openai: FakeOpenAI
) -> None:
    plan = StreamPlan(partials=1, linger=True)
    fake_openai.streams.append(plan)
    labels = {"provider": "openai", "model": "openai/gpt-image-2"}
    async with aiohttp.ClientSession() as client:
        body = {"model": "openai/gpt-image-2", "prompt": "x", "stream": True}
        resp = await client.post(f"{runner_proxy}/v3/images/generations", json=body)
        assert resp.content_type == "text/event-stream"
        assert resp.headers["X-Request-ID"]
        seen = b""
        while b"image_generation.completed" not in seen:
            seen += await resp.content.readany()
        resp.close()
    for _ in range(500):
        if plan.reader_gone:
            break
        await asyncio.sleep(0.01)
    assert plan.reader_gone
    cost = 0.0
    for _ in range(500):
        cost = await _metric(runner_proxy, "imagegate_cost_usd_total", labels)
        if cost:
            break
        await asyncio.sleep(0.01)
    assert cost == pytest.approx(EXPECTED_COST)


async def test_oversized_event_ends_the_stream_with_an_error(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        limits={"max_response_bytes": 4096},
    )
    fake_openai.streams.append(StreamPlan(partials=1, partial_size=10_000))
    body = {"model": "openai/gpt-image-2", "prompt": "x", "stream": True}
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/images/generations"), json=body)
        text = await resp.text()
    assert text.startswith("event: error\n")
    assert "larger than 4096 bytes" in text
