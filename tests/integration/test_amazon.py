"""Amazon Bedrock adapter specifics beyond the shared contract: Nova fields, tasks and
sizes, SigV4 signatures and missing credentials, Stability models on Bedrock."""

from __future__ import annotations

import base64
import io
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import StartGateway
from tests.fakes.base import Reply
from tests.fakes.bedrock import AWS_ENV, FakeBedrock
from tests.gateway import data_url, edit_body, post_json
from tests.images import sized_png


@pytest.fixture
def aws() -> FakeBedrock:
    """Served by ``_aws_proxy``; set its behaviour before or after."""
    return FakeBedrock()


async def _aws_proxy(
    start_gateway: StartGateway,
    fake: FakeBedrock,
    env: dict[str, str] = AWS_ENV,
    **cfg: Any,
) -> TestServer:
    gateway = await start_gateway("amazon", fake=fake, environ=env, section=cfg)
    return gateway.proxy


NOVA = "amazon/amazon.nova-canvas-v1:0"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"text": "another prompt"}, "text"),
        ({"maskImage": "AAAA"}, "maskImage"),
        ({"image": "AAAA"}, "image"),
    ],
)
async def test_bedrock_nova_client_fields_only_add(
    start_gateway: StartGateway, aws: FakeBedrock, fields: dict[str, Any], param: str
) -> None:
    server = await _aws_proxy(start_gateway, aws)
    got, body = await post_json(server, "/v3/images/edits", edit_body(NOVA, **fields))
    assert got == 400, body
    assert body["error"]["param"] == param
    assert aws.received == []


async def test_bedrock_wrong_secret_fails_the_signature(
    start_gateway: StartGateway, aws: FakeBedrock
) -> None:
    server = await _aws_proxy(
        start_gateway, aws, env={**AWS_ENV, "AWS_SECRET_ACCESS_KEY": "wrong"}
    )
    got, body = await post_json(server, "/v3/images/edits", edit_body(NOVA))
    assert got == 502
    assert body["error"]["code"] == "upstream_auth_error"
    assert "wrong" not in str(body)


async def test_bedrock_without_credentials_is_503(
    start_gateway: StartGateway, aws: FakeBedrock
) -> None:
    server = await _aws_proxy(start_gateway, aws, env={}, profile="no-such-profile")
    got, body = await post_json(server, "/v3/images/edits", edit_body(NOVA))
    assert got == 503
    assert body["error"]["code"] == "provider_not_configured"
    assert aws.received == []


async def test_bedrock_nova_variation_and_generation(
    start_gateway: StartGateway, aws: FakeBedrock
) -> None:
    server = await _aws_proxy(start_gateway, aws)
    got, body = await post_json(
        server, "/v3/images/edits",
        edit_body(NOVA, images=2, n=2, size="1024x1024", quality="high",
              seed=4, similarityStrength=0.5),
    )  # fmt: skip
    assert got == 200, body
    assert len(body["data"]) == 2
    sent = aws.last.json
    assert sent is not None
    assert sent["taskType"] == "IMAGE_VARIATION"
    assert len(sent["imageVariationParams"]["images"]) == 2
    assert sent["imageVariationParams"]["similarityStrength"] == 0.5
    assert sent["imageGenerationConfig"] == {
        "numberOfImages": 2, "quality": "premium", "seed": 4,
        "width": 1024, "height": 1024,
    }  # fmt: skip
    got, body = await post_json(
        server, "/v3/images/generations",
        {"model": NOVA, "prompt": "a cat", "size": "1280x720", "quality": "low"},
    )  # fmt: skip
    assert got == 200, body
    sent = aws.last.json
    assert sent is not None
    assert sent["taskType"] == "TEXT_IMAGE"
    assert sent["imageGenerationConfig"]["width"] == 1280
    assert sent["imageGenerationConfig"]["quality"] == "standard"


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"size": "1000x1000"}, "size"), ({"n": 6}, "n"), ({"size": "16:9"}, "size")],
)
async def test_bedrock_nova_refuses_what_it_cannot_do(
    start_gateway: StartGateway, aws: FakeBedrock, fields: dict[str, Any], param: str
) -> None:
    server = await _aws_proxy(start_gateway, aws)
    got, body = await post_json(server, "/v3/images/edits", edit_body(NOVA, **fields))
    assert got == 400
    assert body["error"]["param"] == param
    assert aws.received == []


async def test_bedrock_stability_fans_out_and_filters(
    start_gateway: StartGateway, aws: FakeBedrock
) -> None:
    server = await _aws_proxy(start_gateway, aws)
    model = "amazon/stability.sd3-5-large-v1:0"
    got, body = await post_json(
        server, "/v3/images/edits", edit_body(model, n=2, output_format="jpeg")
    )
    assert got == 200, body
    assert len(body["data"]) == 2
    sent = aws.last.json
    assert sent is not None
    assert sent["mode"] == "image-to-image"
    assert sent["output_format"] == "jpeg"
    assert base64.b64decode(sent["image"]).startswith(b"\x89PNG")
    aws.script(Reply(200, {"seeds": [1], "finish_reasons": ["Filter reason: prompt"],
                           "images": []}))  # fmt: skip
    got, body = await post_json(
        server,
        "/v3/images/generations",
        {"model": model, "prompt": "x", "size": "16:9"},
    )
    assert got == 400
    assert body["error"]["code"] == "content_filtered"
    assert aws.last.json is not None
    assert aws.last.json["aspect_ratio"] == "16:9"


async def test_bedrock_outpainting_keeps_white_edit_mask(
    start_gateway: StartGateway, aws: FakeBedrock
) -> None:
    from tests.contract import IMAGE as IMG
    from tests.contract import MASK, assert_white_edit

    server = await _aws_proxy(start_gateway, aws)
    body = {
        "model": NOVA, "prompt": "beach", "task_type": "OUTPAINTING",
        "images": [{"image_url": data_url(IMG)}], "mask": {"image_url": data_url(MASK)},
    }  # fmt: skip
    got, answer = await post_json(server, "/v3/images/edits", body)
    assert got == 200, answer
    sent = aws.last.json
    assert sent is not None
    assert sent["taskType"] == "OUTPAINTING"
    assert_white_edit(base64.b64decode(sent["outPaintingParams"]["maskImage"]))


async def test_bedrock_signs_a_body_with_a_large_image_spliced_in(
    start_gateway: StartGateway, aws: FakeBedrock
) -> None:
    """An image past ``_prepare.SPLICE_OVER`` goes as base64 slices spliced into the
    JSON; the signature (checked by the fake) covers the very bytes sent."""
    server = await _aws_proxy(start_gateway, aws)
    image = sized_png(3 * 1024 * 1024)
    form = aiohttp.FormData()
    form.add_field("model", NOVA)
    form.add_field("prompt", "a hat")
    # A BytesIO: aiohttp refuses raw bytes this large ("might lock the event loop").
    form.add_field(
        "image", io.BytesIO(image), filename="a.png", content_type="image/png"
    )
    async with (
        aiohttp.ClientSession() as s,
        s.post(server.make_url("/v3/images/edits"), data=form) as r,
    ):
        assert r.status == 200, await r.text()
    sent = aws.last.json
    assert sent is not None
    (got,) = sent["imageVariationParams"]["images"]
    assert base64.b64decode(got, validate=True) == image
