"""Uploads, file_id and stream=true against every adapter of the provider contract.

A file uploaded to /v3/upload and named by ``file_id`` reaches each provider as the
same bytes (masks converted where the provider needs it); ``stream=True`` through the
official SDK works for every provider, relayed for OpenAI and as one completed event
for providers that do not stream.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import StartGateway
from tests.contract import IDS, IMAGE, MASK, MAX_REPLY, PARAMS, Env, start_env
from tests.fakes.azure import FakeAzure
from tests.fakes.openai import FakeOpenAI


@pytest.fixture(params=PARAMS, ids=IDS)
async def env(request: pytest.FixtureRequest, start_gateway: StartGateway) -> Env:
    return await start_env(
        start_gateway, request.param, limits={"max_response_bytes": MAX_REPLY}
    )


def _data_url_bytes(ref: dict[str, str]) -> bytes:
    return base64.b64decode(ref["image_url"].partition(",")[2])


async def test_edit_by_uploaded_file_id(env: Env) -> None:
    body: dict[str, Any] = {
        "model": env.case.model,
        "prompt": "put a hat on it",
        "images": [{"file_id": await env.upload(IMAGE, "a.png")}],
    }
    if env.case.mask:
        body["mask"] = {"file_id": await env.upload(MASK, "mask.png")}
    status, answer = await env.edit_json(body)
    assert status == 200, answer
    assert answer["provider"] == env.case.model.split("/")[0]
    fake = env.fake
    if isinstance(fake, FakeOpenAI | FakeAzure):
        # OpenAI's JSON form (the contract's checks are for the SDK's multipart):
        # the stored bytes go as data URLs.
        sent = fake.last.json
        assert sent is not None
        assert _data_url_bytes(sent["images"][0]) == IMAGE
        if env.case.mask:
            assert _data_url_bytes(sent["mask"]) == MASK
    else:
        env.check()


async def test_unknown_file_id(env: Env) -> None:
    body = {
        "model": env.case.model,
        "prompt": "put a hat on it",
        "images": [{"file_id": "file-abc123"}],
    }
    status, answer = await env.edit_json(body)
    fake = env.fake
    if isinstance(fake, FakeOpenAI):
        # OpenAI has file ids of its own: the id is passed through.
        assert status == 200, answer
        assert fake.last.json is not None
        assert fake.last.json["images"] == [{"file_id": "file-abc123"}]
    else:
        assert status == 404, answer
        assert answer["error"]["param"] == "images[0].file_id"
        assert answer["error"]["code"] == "file_not_found"
        assert fake.received == []


async def test_stream_through_the_sdk(env: Env) -> None:
    kwargs: dict[str, Any] = {}
    if env.case.mask:
        kwargs["mask"] = ("mask.png", MASK, "image/png")
    stream = await env.sdk.images.edit(
        model=env.case.model,
        image=("a.png", IMAGE, "image/png"),
        prompt="put a hat on it",
        stream=True,
        partial_images=1,
        **kwargs,
    )
    events = [event async for event in stream]
    assert events[-1].type == "image_edit.completed"
    assert events[-1].b64_json
    extra = events[-1].model_extra or {}
    assert extra["provider"] == env.case.model.split("/")[0]
    assert "cost" in extra
    partials = [e for e in events if e.type == "image_edit.partial_image"]
    # Only OpenAI streams partial images; the others answer with the final image.
    assert bool(partials) == isinstance(env.fake, FakeOpenAI)


async def test_generation_stream_through_the_sdk(env: Env) -> None:
    if env.case.generate_model is None:
        pytest.skip("the provider does not generate")
    stream = await env.sdk.images.generate(
        model=env.case.generate_model, prompt="a boat", stream=True
    )
    events = [event async for event in stream]
    assert events[-1].type == "image_generation.completed"
    provider = env.case.generate_model.split("/")[0]
    assert (events[-1].model_extra or {})["provider"] == provider
