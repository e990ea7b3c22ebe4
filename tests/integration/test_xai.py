"""xAI adapter specifics beyond the shared contract: several images, size to aspect
ratio, limits, generation."""

from __future__ import annotations

import pytest

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
    assert body["cost"] == pytest.approx(0.04)
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
