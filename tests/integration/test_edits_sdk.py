"""The official OpenAI SDK → proxy → fake OpenAI, as users run it."""

from __future__ import annotations

import hashlib
import io

import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY
from tests.fakes.openai import FakeOpenAI
from tests.images import jpeg_like, png, webp_like


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_single_image(sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI) -> None:
    image = png(8, 8)
    result = await sdk.images.edit(
        model="openai/gpt-image-2", image=("a.png", image, "image/png"), prompt="a hat"
    )
    assert result.data is not None
    assert result.data[0].b64_json
    assert result.model_extra == {"provider": "openai", "cost": 0.03037}
    assert result.usage is not None
    assert result.usage.output_tokens == 1000
    assert result.size == "1024x1024"
    assert result.output_format == "png"
    got = fake_openai.last
    assert got.path == "/v1/images/edits"
    assert got.fields["model"] == ["gpt-image-2"]
    assert got.fields["prompt"] == ["a hat"]
    assert [(f.name, f.content_type) for f in got.files] == [("image", "image/png")]
    assert got.files[0].sha256 == sha(image)
    assert got.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in str(got.headers)


async def test_image_list_mask_and_fields(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    images = [png(8, 8, seed=1), jpeg_like(300), webp_like(100)]
    mask = png(8, 8, alpha=0)
    result = await sdk.images.edit(
        model="openai/gpt-image-2.6-sunburst",
        # Raw bytes: the SDK labels them application/octet-stream; the proxy sniffs.
        image=images,
        mask=mask,
        prompt="merge",
        n=2,
        size="1024x1536",
        quality="low",
        background="opaque",
        output_format="webp",
        output_compression=80,
        input_fidelity="high",
        user="u-1",
        extra_body={"moderation": "low", "custom": {"a": 1}},
    )
    assert len(result.data or []) == 2
    got = fake_openai.last
    assert [f.name for f in got.files] == ["image[]", "image[]", "image[]", "mask"]
    assert [f.content_type for f in got.files] == [
        "image/png", "image/jpeg", "image/webp", "image/png",
    ]  # fmt: skip
    assert [f.sha256 for f in got.files] == [sha(b) for b in [*images, mask]]
    assert got.fields["n"] == ["2"]
    assert got.fields["size"] == ["1024x1536"]
    assert got.fields["output_compression"] == ["80"]
    assert got.fields["input_fidelity"] == ["high"]
    assert got.fields["moderation"] == ["low"]
    assert got.fields["custom[a]"] == ["1"]
    assert got.fields["user"] == ["u-1"]


async def test_file_objects_and_extra_headers(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    buf = io.BytesIO(png(4, 4))
    buf.name = "photo.png"
    await sdk.images.edit(
        model="openai/gpt-image-2",
        image=buf,
        prompt="x",
        extra_body={"extra_headers": {"X-Trace-Tag": "abc"}},
        extra_headers={"X-Client-Only": "not forwarded"},
    )
    got = fake_openai.last
    assert got.headers["X-Trace-Tag"] == "abc"
    assert "X-Client-Only" not in got.headers
    assert "extra_headers" not in str(got.fields)


async def test_sdk_sees_validation_errors(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.edit(model="openai/gpt-image-2", image=png(), prompt="x", n=11)
    assert exc.value.param == "n"
    assert exc.value.type == "invalid_request_error"


async def test_sdk_unknown_provider(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        await sdk.images.edit(model="nope/model", image=png(), prompt="x")
    assert exc.value.code == "model_not_found"
    assert "openai" in exc.value.message


async def test_sdk_credential_header_refused(
    sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        await sdk.images.edit(
            model="openai/gpt-image-2",
            image=png(),
            prompt="x",
            extra_body={"extra_headers": {"X-Api-Key": "stolen"}},
        )
    assert exc.value.param == "extra_headers.X-Api-Key"
    assert fake_openai.received == []


async def test_sdk_generation(sdk: openai.AsyncOpenAI, fake_openai: FakeOpenAI) -> None:
    result = await sdk.images.generate(model="openai/gpt-image-2", prompt="a cat", n=1)
    assert result.model_extra is not None
    assert result.model_extra["provider"] == "openai"
    got = fake_openai.last
    assert got.path == "/v1/images/generations"
    assert got.json == {"model": "gpt-image-2", "prompt": "a cat", "n": 1}


async def test_v1_route_is_the_same_handler(
    proxy: TestServer, fake_openai: FakeOpenAI
) -> None:
    client = openai.AsyncOpenAI(
        base_url=str(proxy.make_url("/v1")), api_key="k", max_retries=0
    )
    async with client:
        result = await client.images.edit(
            model="openai/gpt-image-2", image=png(), prompt="x"
        )
    assert result.data
