"""xAI adapter specifics beyond the shared contract: several images, size to aspect
ratio, limits, generation."""

from __future__ import annotations

from tests.conftest import StartGateway
from tests.gateway import edit_body, post_json


async def test_xai_multi_image_size_and_limits(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway("xai")
    fake, server = gateway.fake, gateway.proxy
    model = "xai/grok-imagine-image"
    got, body = await post_json(
        server, "/v3/images/edits", edit_body(model, images=3, size="1536x1024", n=2)
    )
    assert got == 200, body
    sent = fake.last.json
    assert sent is not None
    assert len(sent["images"]) == 3
    assert "image" not in sent
    assert sent["aspect_ratio"] == "3:2"
    assert sent["n"] == 2
    # 2 x $0.02 for the images, plus the 3 inputs at a rate xAI does not publish for
    # this model: the cost is unknown, so null rather than understated.
    assert body["cost"] is None
    calls = len(fake.received)
    got, body = await post_json(server, "/v3/images/edits", edit_body(model, images=4))
    assert got == 400
    assert body["error"]["param"] == "images"
    got, body = await post_json(
        server, "/v3/images/edits", edit_body(model, size="1000x999")
    )
    assert got == 400
    assert body["error"]["param"] == "size"
    assert len(fake.received) == calls
    got, body = await post_json(
        server, "/v3/images/generations", {"model": model, "prompt": "x", "user": "u1"}
    )
    assert got == 200, body
    assert fake.last.path == "/v1/images/generations"


async def test_xai_2_0_quality_and_resolution(start_gateway: StartGateway) -> None:
    gateway = await start_gateway("xai")
    fake, server = gateway.fake, gateway.proxy
    model = "xai/grok-imagine-image-2.0"
    got, body = await post_json(
        server,
        "/v3/images/edits",
        edit_body(model, quality="medium", resolution="2k", size="1024x1024"),
    )
    assert got == 200, body
    sent = fake.last.json
    assert sent is not None
    assert (sent["model"], sent["quality"], sent["resolution"]) == (
        "grok-imagine-image-2.0", "medium", "2k",
    )  # fmt: skip
    assert sent["aspect_ratio"] == "1:1"
    calls = len(fake.received)
    for field, value in (("quality", "high"), ("resolution", "4k")):
        wrong = {**edit_body(model), field: value}
        got, body = await post_json(server, "/v3/images/edits", wrong)
        assert got == 400, body
        assert body["error"]["param"] == field
    assert len(fake.received) == calls
    # `auto` is OpenAI's default, not an xAI tier: left out.
    got, body = await post_json(
        server, "/v3/images/generations",
        {"model": model, "prompt": "x", "quality": "auto"},
    )  # fmt: skip
    assert got == 200, body
    assert "quality" not in (fake.last.json or {})
    # The older model takes no quality: none is sent, as before.
    got, body = await post_json(
        server, "/v3/images/generations",
        {"model": "xai/grok-imagine-image", "prompt": "x", "quality": "high"},
    )  # fmt: skip
    assert got == 200, body
