"""Stability adapter specifics: endpoint choice by model, raw and JSON replies, content
filtering, generation with fan-out, and fields passed through."""

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
from tests.fakes.stabilityai import FakeStability
from tests.images import png

IMAGE = png(8, 8, seed=5)


@pytest.fixture
def fake() -> FakeStability:
    """Served by the ``proxy`` fixture (or by a test's own ``start_gateway``)."""
    return FakeStability(UPSTREAM_KEY)


@pytest.fixture
async def proxy(start_gateway: StartGateway, fake: FakeStability) -> TestServer:
    return (await start_gateway("stabilityai", fake=fake)).proxy


@pytest.fixture
async def sdk(proxy: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v3")), api_key="c", max_retries=0
    )
    yield client
    await client.close()


async def _edit(sdk: openai.AsyncOpenAI, model: str, **kwargs: Any) -> Any:
    return await sdk.images.edit(
        model=f"stabilityai/{model}",
        image=("a.png", IMAGE, "image/png"),
        prompt="a red car",
        **kwargs,
    )


async def test_raw_image_reply(sdk: openai.AsyncOpenAI, fake: FakeStability) -> None:
    fake.script(Reply(body=OUTPUT_PNG, headers={"Content-Type": "image/png"}))
    result = await _edit(sdk, "outpaint", extra_body={"left": 64, "seed": 1})
    assert fake.last.path == "/v2beta/stable-image/edit/outpaint"
    assert fake.last.fields["left"] == ["64"]
    assert fake.last.fields["prompt"] == ["a red car"]
    assert result.data[0].b64_json == OUTPUT_B64
    assert (result.model_extra or {})["cost"] is None  # edit credits unpublished


async def test_erase_sends_no_prompt_and_search_fields_pass_through(
    sdk: openai.AsyncOpenAI, fake: FakeStability
) -> None:
    await _edit(sdk, "erase")
    assert "prompt" not in fake.last.fields
    assert fake.file("image") == IMAGE
    await _edit(sdk, "search-and-replace", extra_body={"search_prompt": "bike"})
    assert fake.last.fields["search_prompt"] == ["bike"]
    assert fake.last.fields["prompt"] == ["a red car"]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body={"image": OUTPUT_B64, "finish_reason": "CONTENT_FILTERED"}),
        Reply(body=OUTPUT_PNG,
              headers={"Content-Type": "image/png", "finish-reason": "CONTENT_FILTERED"}),
        Reply(status=403, body={"id": "x", "name": "content_moderation",
                                "errors": ["Your request was flagged"]}),
    ],
    ids=["json", "raw", "403"],
)  # fmt: skip
async def test_content_filtering_is_a_400(
    sdk: openai.AsyncOpenAI, fake: FakeStability, reply: Reply
) -> None:
    fake.script(reply)
    with pytest.raises(openai.BadRequestError) as exc:
        await _edit(sdk, "inpaint")
    assert exc.value.code == "moderation_blocked"


async def test_json_without_image_is_a_502(
    sdk: openai.AsyncOpenAI, fake: FakeStability
) -> None:
    fake.script(Reply(body={"finish_reason": "SUCCESS"}))
    with pytest.raises(openai.InternalServerError) as exc:
        await _edit(sdk, "inpaint")
    assert exc.value.status_code == 502


async def test_generation_fans_out_with_aspect_ratio(
    sdk: openai.AsyncOpenAI, fake: FakeStability
) -> None:
    result = await sdk.images.generate(
        model="stabilityai/ultra", prompt="a lighthouse", n=2, size="1792x1024",
        extra_body={"output_format": "webp", "negative_prompt": "fog"},
    )  # fmt: skip
    assert len(fake.received) == 2
    for rec in fake.received:
        assert rec.path == "/v2beta/stable-image/generate/ultra"
        assert rec.fields["aspect_ratio"] == ["16:9"]
        assert rec.fields["output_format"] == ["webp"]
        assert rec.fields["negative_prompt"] == ["fog"]
        assert rec.files == []
    assert result.data is not None
    assert len(result.data) == 2
    assert (result.model_extra or {})["cost"] == pytest.approx(0.16)


async def test_sd3_models_name_themselves(
    sdk: openai.AsyncOpenAI, fake: FakeStability
) -> None:
    result = await sdk.images.generate(
        model="stabilityai/sd3.5-large", prompt="x", response_format="url"
    )
    assert fake.last.path == "/v2beta/stable-image/generate/sd3"
    assert fake.last.fields["model"] == ["sd3.5-large"]
    assert result.data is not None
    assert result.data[0].url == "data:image/png;base64," + OUTPUT_B64
    assert (result.model_extra or {})["cost"] == pytest.approx(0.065)


@pytest.mark.parametrize(
    ("call", "param"),
    [
        ({"op": "edit", "model": "upscale"}, "model"),
        ({"op": "generate", "model": "inpaint"}, "model"),
        ({"op": "edit", "model": "search-and-replace", "mask": True}, "mask"),
        ({"op": "edit", "model": "inpaint", "size": "1024x1024"}, "size"),
        ({"op": "generate", "model": "core", "size": "1024x3000"}, "size"),
    ],
)
async def test_refused_before_sending(
    sdk: openai.AsyncOpenAI, fake: FakeStability, call: dict[str, Any], param: str
) -> None:
    kwargs: dict[str, Any] = {}
    if "size" in call:
        kwargs["size"] = call["size"]
    if call.get("mask"):
        kwargs["mask"] = ("m.png", png(8, 8, alpha=0), "image/png")
    model = f"stabilityai/{call['model']}"
    request = (
        sdk.images.generate(model=model, prompt="x", **kwargs)
        if call["op"] == "generate"
        else _edit(sdk, call["model"], **kwargs)
    )
    with pytest.raises(openai.BadRequestError) as exc:
        await request
    assert exc.value.param == param
    assert fake.received == []


@pytest.mark.parametrize(
    "image",
    # A small data URL is decoded with the body; a big one (64 KiB and more) is taken
    # out of the JSON body first (proxy.json_body) and decoded once for the form.
    [png(6, 6, seed=9), png(6, 6, seed=3) + bytes(range(256)) * 256],
    ids=["small", "big"],
)
async def test_json_data_url_input(
    proxy: TestServer, fake: FakeStability, image: bytes
) -> None:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    async with aiohttp.ClientSession() as client:
        resp = await client.post(
            proxy.make_url("/v3/images/edits"),
            json={"model": "stabilityai/remove-background", "prompt": "-",
                  "images": [{"image_url": url}]},
        )  # fmt: skip
        assert resp.status == 200, await resp.text()
    assert fake.file("image") == image
    assert "prompt" not in fake.last.fields


async def test_remote_image_is_refused(proxy: TestServer, fake: FakeStability) -> None:
    async with aiohttp.ClientSession() as client:
        resp = await client.post(
            proxy.make_url("/v3/images/edits"),
            json={"model": "stabilityai/inpaint", "prompt": "x",
                  "images": [{"image_url": "https://127.0.0.1/a.png"}]},
        )  # fmt: skip
        error = (await resp.json())["error"]
    assert resp.status == 400
    # The proxy fetches URLs for this provider; a loopback one is refused first.
    assert error["param"] == "images[0].image_url"
    assert fake.received == []


async def test_the_client_file_name_reaches_stability(
    sdk: openai.AsyncOpenAI, fake: FakeStability
) -> None:
    # Before: every image went as image.png. The path is dropped, the name kept.
    await sdk.images.edit(
        model="stabilityai/outpaint",
        image=("photos/room 1.png", IMAGE, "image/png"),
        prompt="a red car",
    )
    assert [(f.name, f.filename) for f in fake.last.files] == [("image", "room 1.png")]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        # size already becomes aspect_ratio: a second part would reach Stability.
        ({"size": "1792x1024", "extra_body": {"aspect_ratio": "1:1"}}, "aspect_ratio"),
        ({"extra_body": {"image": "https://elsewhere.example/x.png"}}, "image"),
        ({"extra_body": {"mask": "x"}}, "mask"),
    ],
)
async def test_client_fields_are_never_a_second_form_part(
    sdk: openai.AsyncOpenAI, fake: FakeStability, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.generate(model="stabilityai/ultra", prompt="x", **kwargs)
    assert exc.value.param == param
    assert fake.received == []
