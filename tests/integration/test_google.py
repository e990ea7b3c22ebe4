"""Gemini adapter specifics: generation, size mapping, blocks sent as HTTP 200, fan-out,
JSON input, key handling."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import UPSTREAM_KEY, StartGateway
from tests.fakes.base import OUTPUT_B64, OUTPUT_PNG, Reply
from tests.fakes.google import FakeGemini
from tests.images import png

MODEL = "google/gemini-3.1-flash-image"
# One call of the fake: 10 text + 1290 image tokens in and out, gemini-3.1-flash-image
# ($0.50 text and image in, $3 text out, $60 image out per 1M tokens).
CALL_COST = (10 * 0.50 + 1290 * 0.50 + 10 * 3.00 + 1290 * 60.00) / 1_000_000


@pytest.fixture
def fake() -> FakeGemini:
    """Served by the ``proxy`` fixture (or by a test's own ``start_gateway``)."""
    return FakeGemini(UPSTREAM_KEY)


@pytest.fixture
async def proxy(start_gateway: StartGateway, fake: FakeGemini) -> TestServer:
    return (await start_gateway("google", fake=fake)).proxy


@pytest.fixture
async def sdk(proxy: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key="c", max_retries=0
    )
    yield client
    await client.close()


async def test_generation_maps_size_to_aspect_ratio(
    sdk: openai.AsyncOpenAI, fake: FakeGemini
) -> None:
    result = await sdk.images.generate(model=MODEL, prompt="a cat", size="1536x1024")
    body = fake.last.json
    assert body is not None
    assert fake.models == ["gemini-3.1-flash-image"]
    assert body["contents"][0]["parts"] == [{"text": "a cat"}]
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "3:2"}
    assert result.data is not None
    assert result.data[0].b64_json == OUTPUT_B64
    assert (result.model_extra or {})["cost"] == pytest.approx(CALL_COST)
    assert result.usage is not None
    assert result.usage.input_tokens == 1300


@pytest.mark.parametrize(
    ("size", "image_config"),
    [
        ("2048x2048", {"aspectRatio": "1:1", "imageSize": "2K"}),
        ("16:9", {"aspectRatio": "16:9"}),
        ("auto", None),
    ],
)
async def test_size_tiers(
    sdk: openai.AsyncOpenAI,
    fake: FakeGemini,
    size: str,
    image_config: dict[str, str] | None,
) -> None:
    await sdk.images.generate(model=MODEL, prompt="a cat", size=size)
    assert fake.last.json is not None
    assert fake.last.json["generationConfig"].get("imageConfig") == image_config


async def test_unsupported_size_is_refused_before_sending(
    sdk: openai.AsyncOpenAI, fake: FakeGemini
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.generate(model=MODEL, prompt="a cat", size="3000x1000")
    assert exc.value.param == "size"
    assert "16:9" in exc.value.message
    assert fake.received == []


async def test_n_fans_out_and_sums_cost(
    sdk: openai.AsyncOpenAI, fake: FakeGemini
) -> None:
    result = await sdk.images.edit(
        model=MODEL, image=("a.png", png(), "image/png"), prompt="hat", n=3
    )
    assert len(fake.received) == 3
    assert result.data is not None
    assert len(result.data) == 3
    assert (result.model_extra or {})["cost"] == pytest.approx(3 * CALL_COST)
    assert result.usage is not None
    assert result.usage.output_tokens == 3 * 1300


@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT",
                             "blockReasonMessage": "not allowed"}},
         "PROHIBITED_CONTENT): not allowed"),
        ({"candidates": [{"finishReason": "IMAGE_SAFETY",
                          "finishMessage": "unsafe image"}]},
         "IMAGE_SAFETY): unsafe image"),
        ({"candidates": [{"content": {"parts": []}, "finishReason": "SAFETY"}]},
         "blocked the request (SAFETY)"),
    ],
)  # fmt: skip
async def test_blocks_sent_as_200_are_400s(
    sdk: openai.AsyncOpenAI, fake: FakeGemini, reply: dict[str, Any], needle: str
) -> None:
    fake.script(Reply(body=reply))
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.generate(model=MODEL, prompt="x")
    assert exc.value.code == "moderation_blocked"
    assert needle in exc.value.message


async def test_text_only_answer_is_a_400_with_the_models_words(
    sdk: openai.AsyncOpenAI, fake: FakeGemini
) -> None:
    fake.script(Reply(body=FakeGemini.reply(images=0, text="I cannot draw that")))
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.generate(model=MODEL, prompt="x")
    assert exc.value.code == "no_image_generated"
    assert "I cannot draw that" in exc.value.message
    assert "STOP" in exc.value.message


async def test_thought_parts_are_not_results(
    sdk: openai.AsyncOpenAI, fake: FakeGemini
) -> None:
    reply = FakeGemini.reply()
    parts = reply["candidates"][0]["content"]["parts"]
    parts.insert(0, {"inlineData": {"mimeType": "image/png", "data": "draft"},
                     "thought": True})  # fmt: skip
    reply["usageMetadata"]["thoughtsTokenCount"] = 100
    fake.script(Reply(body=reply))
    result = await sdk.images.generate(model=MODEL, prompt="x")
    assert result.data is not None
    assert [d.b64_json for d in result.data] == [OUTPUT_B64]
    assert result.usage is not None
    assert result.usage.output_tokens == 1400
    extra = (result.model_extra or {})["cost"]
    # The 100 thinking tokens bill as text output, $3/1M.
    assert extra == pytest.approx(CALL_COST + 100 * 3.00 / 1_000_000)


async def test_mask_is_refused_before_sending(
    sdk: openai.AsyncOpenAI, fake: FakeGemini
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.edit(
            model=MODEL,
            image=("a.png", png(), "image/png"),
            mask=("m.png", png(alpha=0), "image/png"),
            prompt="hat",
        )
    assert exc.value.param == "mask"
    assert fake.received == []


async def test_json_edit_reuses_data_urls_and_answers_urls(
    proxy: TestServer, fake: FakeGemini
) -> None:
    first, second = png(4, 4, seed=1), png(4, 4, seed=2)
    body = {
        "model": MODEL,
        "prompt": "combine",
        "images": [
            {"image_url": "data:image/png;base64," + base64.b64encode(img).decode()}
            for img in (first, second)
        ],
        "response_format": "url",
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT",
                            "threshold": "BLOCK_NONE"}],
        "generationConfig": {"temperature": 0.5},
    }  # fmt: skip
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/images/edits"), json=body)
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    assert fake.images[-1] == [("image/png", first), ("image/png", second)]
    sent = fake.last.json
    assert sent is not None
    assert sent["safetySettings"][0]["threshold"] == "BLOCK_NONE"
    assert sent["generationConfig"]["temperature"] == 0.5
    assert sent["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    url = answer["data"][0]["url"]
    assert url == "data:image/png;base64," + OUTPUT_B64
    assert base64.b64decode(url.partition(",")[2]) == OUTPUT_PNG


async def test_remote_image_urls_are_refused(
    proxy: TestServer, fake: FakeGemini
) -> None:
    body = {"model": MODEL, "prompt": "x",
            "images": [{"image_url": "https://127.0.0.1/a.png"}]}  # fmt: skip
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/images/edits"), json=body)
        assert resp.status == 400
        error = (await resp.json())["error"]
    # The proxy fetches URLs for this provider; a loopback one is refused first.
    assert error["param"] == "images[0].image_url"
    assert fake.received == []


async def test_invalid_key_reported_as_http_400_is_a_502(
    start_gateway: StartGateway, fake: FakeGemini
) -> None:
    gateway = await start_gateway(
        "google", fake=fake, environ={"GEMINI_API_KEY": "wrong"}
    )
    proxy = gateway.proxy
    async with aiohttp.ClientSession() as client:
        resp = await client.post(
            proxy.make_url("/v3/images/generations"),
            json={"model": MODEL, "prompt": "x"},
        )
        text = await resp.text()
    assert resp.status == 502
    assert resp.headers["x-should-retry"] == "false"
    assert "API key not valid" not in text
    assert fake.last.headers["x-goog-api-key"] == "wrong"


async def test_unset_key_is_a_503(
    start_gateway: StartGateway, fake: FakeGemini
) -> None:
    proxy = (await start_gateway("google", fake=fake, environ={})).proxy
    async with aiohttp.ClientSession() as client:
        resp = await client.post(
            proxy.make_url("/v3/images/generations"),
            json={"model": MODEL, "prompt": "x"},
        )
        error = (await resp.json())["error"]
    assert resp.status == 503
    assert "GEMINI_API_KEY" in error["message"]
    assert fake.received == []


async def test_reply_without_usage_has_no_cost(
    sdk: openai.AsyncOpenAI, fake: FakeGemini
) -> None:
    reply = FakeGemini.reply()
    del reply["usageMetadata"]
    fake.script(Reply(body=reply))
    result = await sdk.images.generate(model=MODEL, prompt="x")
    assert (result.model_extra or {})["cost"] is None


@pytest.mark.parametrize(
    "model", ["google/../../x", "google/..", "google/a/b", "google/gemini#x"]
)
async def test_model_ids_cannot_reach_other_endpoints(
    sdk: openai.AsyncOpenAI, fake: FakeGemini, model: str
) -> None:
    # The gateway's key goes with the call: models/..%2F..%2Fx must never be sent.
    with pytest.raises(openai.NotFoundError) as exc:
        await sdk.images.generate(model=model, prompt="a cat")
    assert exc.value.param == "model"
    assert exc.value.code == "model_not_found"
    assert fake.received == []


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        # Four images per call, past the n the proxy fans out and counts.
        ({"generationConfig": {"candidateCount": 4}}, "generationConfig.candidateCount"),
        ({"generationConfig": {"responseModalities": ["TEXT"]}},
         "generationConfig.responseModalities"),
        ({"generationConfig": "x"}, "generationConfig"),
        ({"contents": [{"parts": [{"text": "other"}]}]}, "contents"),
    ],
)  # fmt: skip
async def test_client_fields_cannot_replace_the_gateways(
    proxy: TestServer, fake: FakeGemini, extra: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "prompt": "a cat", **extra}
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/images/generations"), json=body)
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
    assert error["param"] == param
    assert fake.received == []
