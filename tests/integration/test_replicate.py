"""Replicate adapter specifics beyond the shared contract: polling past Prefer: wait,
failed, canceled and overdue predictions, output-host allowlists, URL output, the mask
sent white-edit."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import UPSTREAM_KEY, StartGateway
from tests.fakes.base import Reply
from tests.fakes.replicate import FakeReplicate
from tests.gateway import data_url, edit_body, post_json


@pytest.fixture
def rep() -> FakeReplicate:
    """Served by ``_rep_proxy``; set its behaviour before or after."""
    return FakeReplicate(UPSTREAM_KEY)


async def _rep_proxy(
    start_gateway: StartGateway, fake: FakeReplicate, **cfg: Any
) -> TestServer:
    return (await start_gateway("replicate", fake=fake, section=cfg)).proxy


REP_MODEL = "replicate/black-forest-labs/flux-kontext-pro"


async def test_replicate_polls_past_prefer_wait(
    start_gateway: StartGateway, rep: FakeReplicate
) -> None:
    rep.sync = False
    rep.polls_before_done = 2
    server = await _rep_proxy(start_gateway, rep, wait_s=5)
    got, body = await post_json(
        server,
        "/v3/images/edits",
        edit_body(REP_MODEL, size="16:9", output_format="webp"),
    )
    assert got == 200, body
    assert base64.b64decode(body["data"][0]["b64_json"]).startswith(b"\x89PNG")
    paths = [r.path for r in rep.received]
    assert paths[1:4] == ["/v1/predictions/p1"] * 3
    create = rep.received[0]
    assert create.headers["Prefer"] == "wait=5"
    assert create.json is not None
    assert create.json["input"]["aspect_ratio"] == "16:9"
    assert create.json["input"]["output_format"] == "webp"


async def test_replicate_failed_prediction_is_400_with_reason(
    start_gateway: StartGateway, rep: FakeReplicate
) -> None:
    rep.final = "failed"
    server = await _rep_proxy(start_gateway, rep)
    got, body = await post_json(server, "/v3/images/edits", edit_body(REP_MODEL))
    assert got == 400
    assert "NSFW content detected" in body["error"]["message"]
    assert body["error"]["code"] == "prediction_failed"


async def test_replicate_canceled_prediction_is_502(
    start_gateway: StartGateway, rep: FakeReplicate
) -> None:
    rep.final = "canceled"
    server = await _rep_proxy(start_gateway, rep)
    got, body = await post_json(server, "/v3/images/edits", edit_body(REP_MODEL))
    assert got == 502
    assert body["error"]["code"] == "prediction_canceled"


async def test_replicate_deadline_cancels_the_prediction(
    start_gateway: StartGateway, rep: FakeReplicate
) -> None:
    rep.final = "never"
    server = await _rep_proxy(start_gateway, rep, deadline_s=0.1)
    got, _body = await post_json(server, "/v3/images/edits", edit_body(REP_MODEL))
    assert got == 504
    assert rep.canceled == ["p1"]


async def test_replicate_output_outside_allowed_hosts_is_refused(
    start_gateway: StartGateway, rep: FakeReplicate
) -> None:
    server = await _rep_proxy(
        start_gateway, rep, output_hosts=["https://replicate.delivery"]
    )
    got, _body = await post_json(server, "/v3/images/edits", edit_body(REP_MODEL))
    assert got == 502
    assert not any(r.path.startswith("/delivery/") for r in rep.received)


async def test_replicate_url_output_and_generation(
    start_gateway: StartGateway, rep: FakeReplicate
) -> None:
    server = await _rep_proxy(start_gateway, rep)
    got, body = await post_json(
        server,
        "/v3/images/generations",
        {"model": REP_MODEL, "prompt": "a cat", "response_format": "url"},
    )
    assert got == 200, body
    assert body["data"][0]["url"] == f"{rep.url}/delivery/p1.png"
    assert body["provider"] == "replicate"
    got, body = await post_json(
        server, "/v3/images/edits", edit_body(REP_MODEL, images=2)
    )
    assert got == 200, body
    inputs = rep.received[-2].json
    assert inputs is not None
    assert len(inputs["input"]["input_images"]) == 2


async def test_replicate_sends_the_mask_white_edit(
    start_gateway: StartGateway, rep: FakeReplicate
) -> None:
    from tests.contract import IMAGE as IMG
    from tests.contract import MASK, assert_white_edit

    server = await _rep_proxy(start_gateway, rep)
    body = {"model": REP_MODEL, "prompt": "x", "images": [{"image_url": data_url(IMG)}],
            "mask": {"image_url": data_url(MASK)}}  # fmt: skip
    got, answer = await post_json(server, "/v3/images/edits", body)
    assert got == 200, answer
    sent = rep.received[0].json
    assert sent is not None
    assert_white_edit(base64.b64decode(sent["input"]["mask"].partition(",")[2]))


async def test_replicate_success_without_output_is_502(
    start_gateway: StartGateway, rep: FakeReplicate
) -> None:
    server = await _rep_proxy(start_gateway, rep)
    rep.script(Reply(201, {"id": "p9", "status": "succeeded", "output": None}))
    got, body = await post_json(server, "/v3/images/edits", edit_body(REP_MODEL))
    assert got == 502
    assert "no image" in body["error"]["message"]
