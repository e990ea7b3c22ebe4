"""BFL adapter specifics beyond the shared contract: job outcomes and deadlines,
polling-host allowlists, multi-image kontext, fan-out, generation, expand, the polling
wait counted as upstream time, and model ids that cannot reach other endpoints."""

from __future__ import annotations

import base64
import io
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image
from prometheus_client import CollectorRegistry

from tests.conftest import UPSTREAM_KEY, StartGateway
from tests.fakes.base import Reply
from tests.fakes.bfl import FakeBFL
from tests.gateway import edit_body, post_json
from tests.images import png, sized_png

IMAGE = png(8, 8, seed=5)


@pytest.fixture
def bfl() -> FakeBFL:
    """Served by ``_bfl_proxy``; set its behaviour before or after."""
    return FakeBFL(UPSTREAM_KEY)


async def _bfl_proxy(
    start_gateway: StartGateway, fake: FakeBFL, **cfg: Any
) -> TestServer:
    return (await start_gateway("bfl", fake=fake, section=cfg)).proxy


@pytest.mark.parametrize(
    ("final", "status", "code"),
    [
        ("Error", 502, "upstream_job_failed"),
        ("Failed", 502, "upstream_job_failed"),
        ("Content Moderated", 400, "moderation_blocked"),
        ("Request Moderated", 400, "moderation_blocked"),
    ],
)
async def test_bfl_failed_jobs_are_clear_errors(
    start_gateway: StartGateway, bfl: FakeBFL, final: str, status: int, code: str
) -> None:
    bfl.final = final
    server = await _bfl_proxy(start_gateway, bfl)
    got, body = await post_json(
        server, "/v3/images/edits", edit_body("bfl/flux-kontext-pro")
    )
    assert got == status
    assert body["error"]["code"] == code
    assert final in body["error"]["message"]


async def test_bfl_job_past_its_deadline_is_504(
    start_gateway: StartGateway, bfl: FakeBFL
) -> None:
    bfl.final = "never"
    server = await _bfl_proxy(start_gateway, bfl, deadline_s=0.1)
    got, body = await post_json(
        server, "/v3/images/edits", edit_body("bfl/flux-kontext-pro")
    )
    assert got == 504
    assert body["error"]["code"] == "upstream_timeout"
    assert len(bfl.received) > 2  # it did poll before giving up


async def test_bfl_never_polls_outside_allowed_hosts(
    start_gateway: StartGateway, bfl: FakeBFL
) -> None:
    bfl.poll_base = "http://attacker.example"
    server = await _bfl_proxy(start_gateway, bfl)
    got, body = await post_json(
        server, "/v3/images/edits", edit_body("bfl/flux-kontext-pro")
    )
    assert got == 502
    assert "allowed hosts" in body["error"]["message"]
    assert [r.method for r in bfl.received] == ["POST"]


async def test_bfl_default_hosts_refuse_a_local_polling_url(
    start_gateway: StartGateway, bfl: FakeBFL
) -> None:
    # None: back to the config's defaults (the real provider hosts).
    server = await _bfl_proxy(
        start_gateway, bfl, poll_interval_s=None, allowed_hosts=None
    )
    got, _ = await post_json(
        server, "/v3/images/edits", edit_body("bfl/flux-kontext-pro")
    )
    assert got == 502
    assert len(bfl.received) == 1


async def test_bfl_kontext_multi_image_size_and_url_output(
    start_gateway: StartGateway, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_gateway, bfl)
    got, body = await post_json(
        server,
        "/v3/images/edits",
        edit_body("bfl/flux-kontext-max", images=2, size="1536x1024",
              response_format="url", seed=3, output_format="jpeg"),
    )  # fmt: skip
    assert got == 200, body
    assert body["data"][0]["url"].startswith(f"{bfl.url}/delivery/")
    sent = bfl.received[0].json
    assert sent is not None
    assert sent["aspect_ratio"] == "3:2"
    assert sent["seed"] == 3
    assert sent["output_format"] == "jpeg"
    assert set(sent) >= {"input_image", "input_image_2"}
    # url wanted: the sample is handed on, never downloaded.
    assert all(not r.path.startswith("/delivery/") for r in bfl.received)


async def test_bfl_n_fans_out_and_sums_cost(
    start_gateway: StartGateway, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_gateway, bfl)
    async with openai.AsyncOpenAI(
        base_url=str(server.make_url("/v3")), api_key="c", max_retries=0
    ) as sdk:
        result = await sdk.images.edit(
            model="bfl/flux-kontext-pro", image=("a.png", IMAGE, "image/png"),
            prompt="a hat", n=2,
        )  # fmt: skip
    assert result.data is not None
    assert len(result.data) == 2
    assert [r.path for r in bfl.received if r.method == "POST"] == [
        "/v1/flux-kontext-pro"
    ] * 2
    assert result.model_extra is not None
    assert result.model_extra["cost"] == pytest.approx(0.08)


async def test_bfl_generation_and_model_capabilities(
    start_gateway: StartGateway, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_gateway, bfl)
    got, body = await post_json(
        server, "/v3/images/generations", {"model": "bfl/flux-pro-1.1", "prompt": "x"}
    )
    assert got == 200, body
    got, body = await post_json(
        server,
        "/v3/images/generations",
        {"model": "bfl/flux-pro-1.0-fill", "prompt": "x"},
    )
    assert got == 400
    assert "generation" in body["error"]["message"]
    got, body = await post_json(
        server, "/v3/images/edits", edit_body("bfl/flux-pro-1.1")
    )
    assert got == 400
    got, body = await post_json(
        server,
        "/v3/images/edits",
        edit_body("bfl/flux-pro-1.0-expand", size="1024x1024"),
    )
    assert got == 400
    assert body["error"]["param"] == "size"


async def test_bfl_error_detail_list_is_passed_on(
    start_gateway: StartGateway, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_gateway, bfl)
    bfl.script(
        Reply(422, {"detail": [{"loc": ["body", "seed"], "msg": "seed too large"}]})
    )
    got, body = await post_json(
        server, "/v3/images/edits", edit_body("bfl/flux-kontext-pro")
    )
    assert got == 422
    assert body["error"]["message"] == "seed too large"


async def test_bfl_expand_sends_the_image_without_mask(
    start_gateway: StartGateway, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_gateway, bfl)
    got, body = await post_json(
        server, "/v3/images/edits", edit_body("bfl/flux-pro-1.0-expand", top=64)
    )
    assert got == 200, body
    sent = bfl.received[0].json
    assert sent is not None
    assert sent["top"] == 64
    assert "mask" not in sent
    assert base64.b64decode(sent["image"]).startswith(b"\x89PNG")


async def test_polling_wait_counts_as_upstream_time(
    start_gateway: StartGateway, bfl: FakeBFL, registry: CollectorRegistry
) -> None:
    bfl.pending_polls = 2
    server = await _bfl_proxy(start_gateway, bfl, poll_interval_s=0.2)
    got, _ = await post_json(
        server, "/v3/images/edits", edit_body("bfl/flux-kontext-pro")
    )
    assert got == 200
    overhead = registry.get_sample_value(
        "imagegate_overhead_seconds_sum", {"route": "/v3/images/edits"}
    )
    total = registry.get_sample_value(
        "imagegate_request_duration_seconds_sum", {"route": "/v3/images/edits"}
    )
    assert overhead is not None
    assert total is not None
    # The two 200 ms waits between polls belong to the provider, not to the gateway.
    assert total >= 0.4
    assert overhead < 0.2


@pytest.mark.parametrize(
    "model",
    ["bfl/../account", "bfl/..", "bfl/flux?x=1"],
)
async def test_model_ids_cannot_reach_other_provider_endpoints(
    start_gateway: StartGateway, bfl: FakeBFL, model: str
) -> None:
    server = await _bfl_proxy(start_gateway, bfl)
    got, body = await post_json(
        server, "/v3/images/generations", {"model": model, "prompt": "x"}
    )
    assert got == 404
    assert body["error"]["code"] == "model_not_found"
    assert bfl.received == []


async def test_flux2_width_height_and_reference_images(
    start_gateway: StartGateway, bfl: FakeBFL
) -> None:
    server = await _bfl_proxy(start_gateway, bfl)
    got, body = await post_json(
        server,
        "/v3/images/edits",
        edit_body("bfl/flux-2-pro", images=3, size="1536x1024"),
    )
    assert got == 200, body
    submit = next(r for r in bfl.received if r.method == "POST")
    assert submit.path == "/v1/flux-2-pro"
    sent = submit.json
    assert sent is not None
    assert (sent["width"], sent["height"]) == (1536, 1024)
    assert "aspect_ratio" not in sent
    assert [k for k in sent if k.startswith("input_image")] == [
        "input_image", "input_image_2", "input_image_3",
    ]  # fmt: skip
    calls = len(bfl.received)
    for request, param in (
        (edit_body("bfl/flux-2-klein-4b", images=5), "images"),
        (edit_body("bfl/flux-2-max", size="16:9"), "size"),
    ):
        got, body = await post_json(server, "/v3/images/edits", request)
        assert got == 400, body
        assert body["error"]["param"] == param
    assert len(bfl.received) == calls
    got, body = await post_json(
        server, "/v3/images/generations",
        {"model": "bfl/flux-2-klein-9b", "prompt": "x", "size": "1024x768"},
    )  # fmt: skip
    assert got == 200, body
    assert bfl.received[calls].json == {"prompt": "x", "width": 1024, "height": 768}


@pytest.mark.parametrize("size", [2 * 1024 * 1024, 6 * 1024 * 1024])
async def test_bfl_fill_sends_a_large_image_and_the_converted_mask(
    start_gateway: StartGateway, bfl: FakeBFL, size: int
) -> None:
    """A multipart image past ``_prepare.SPLICE_OVER`` (held in memory, or spooled
    past ``spool_bytes``) goes upstream as its base64 sliced into the JSON body."""
    server = await _bfl_proxy(start_gateway, bfl)
    image = sized_png(size)  # declares 2x2 pixels: the mask's size
    form = aiohttp.FormData()
    form.add_field("model", "bfl/flux-pro-1.0-fill")
    form.add_field("prompt", "a hat")
    # A BytesIO: aiohttp refuses raw bytes this large ("might lock the event loop").
    form.add_field(
        "image", io.BytesIO(image), filename="a.png", content_type="image/png"
    )
    mask = png(2, 2, alpha=0)
    form.add_field("mask", mask, filename="m.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as s,
        s.post(server.make_url("/v3/images/edits"), data=form) as r,
    ):
        assert r.status == 200, await r.text()
    sent = bfl.received[0].json
    assert sent is not None
    assert sent["prompt"] == "a hat"
    assert base64.b64decode(sent["image"], validate=True) == image
    white = Image.open(io.BytesIO(base64.b64decode(sent["mask"], validate=True)))
    assert white.mode == "L"
    assert white.getextrema() == (255, 255)  # all transparent: all edit
