"""``POST /v3/images/quote`` against a real proxy and fake providers: the range from
the published rates (computed here by hand), nothing sent upstream, no budget spent,
validation like an edit's, and multipart files read up to their header only."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import StartGateway, leftover_files
from tests.gateway import KEY_A, generate, key_entry
from tests.images import png, sized_png

RETIRED = "google/gemini-2.5-flash-image"  # retired-id: quoted as an edit: a 410


async def quote(
    proxy: TestServer,
    body: dict[str, Any] | aiohttp.FormData,
    *,
    key: str | None = None,
    path: str = "/v3/images/quote",
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    kw: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"data": body}
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url(path), headers=headers, **kw) as r,
    ):
        return r.status, await r.json()


def form(fields: dict[str, Any], *images: bytes, mask: bytes | None = None) -> Any:
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, str(value))
    for i, image in enumerate(images):
        data.add_field(
            "image[]", io.BytesIO(image), filename=f"{i}.png", content_type="image/png"
        )
    if mask is not None:
        data.add_field("mask", mask, filename="m.png", content_type="image/png")
    return data


def data_url(image: bytes) -> dict[str, str]:
    return {"image_url": "data:image/png;base64," + base64.b64encode(image).decode()}


async def test_generation_quote_by_tokens_sends_nothing(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway("openai")
    body = {"model": "openai/gpt-image-2", "prompt": "a cat", "n": 2,
            "size": "1024x1024", "quality": "low"}  # fmt: skip
    for path in ("/v3/images/quote", "/v1/images/quote"):
        status, got = await quote(gw.proxy, body, path=path)
        assert status == 200, got
        assert got["object"] == "image.quote"
        assert (got["model"], got["operation"]) == ("openai/gpt-image-2", "generate")
        assert got["currency"] == "USD"
        # 2 images x 196 output tokens at $30/1M; the 5-byte prompt at $5/1M at most.
        assert got["min_cost"] == pytest.approx(2 * 196 * 30 / 1e6, abs=1e-9)
        assert got["max_cost"] == pytest.approx((2 * 196 * 30 + 5 * 5) / 1e6, abs=1e-9)
        pricing = got["pricing"]
        assert pricing["shape"] == "tokens"
        assert pricing["price"]["tokens"]["image_out"] == 30.0
        assert pricing["tokens_per_image"]["table"]["1024x1024/low"] == 196
        assert pricing["source"]
        assert pricing["checked"] == "2026-12-06"
    # Quality left to the provider: from its cheapest to its dearest square image.
    status, got = await quote(gw.proxy, {**body, "n": 1, "quality": "auto"})
    assert (got["min_cost"], got["max_cost"]) == (
        pytest.approx(196 * 30 / 1e6),
        pytest.approx((7024 * 30 + 25) / 1e6),
    )
    assert gw.fake.received == []


async def test_edit_quote_with_input_image_charge_and_operation_field(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway("xai")
    body = {"model": "xai/grok-imagine-image-2.0", "prompt": "a hat",
            "images": [data_url(png()), data_url(png())],
            "resolution": "2k", "quality": "medium"}  # fmt: skip
    status, got = await quote(gw.proxy, body)
    assert status == 200, got
    assert got["operation"] == "edit"  # it has images
    # One 2k/medium image at $0.08 plus 2 input images at $0.01.
    assert (got["min_cost"], got["max_cost"]) == (0.1, 0.1)
    assert got["pricing"]["shape"] == "per_image"
    # The same body as a generation: no input charge.
    gen = {k: v for k, v in body.items() if k != "images"}
    status, got = await quote(gw.proxy, {**gen, "operation": "generate", "n": 3})
    assert (status, got["operation"], got["max_cost"]) == (200, "generate", 0.24)
    # Quality left to xAI may land on a tier xAI has not published for 1k.
    status, got = await quote(gw.proxy, {**gen, "resolution": "1k"})
    assert (status, got["min_cost"], got["max_cost"]) == (200, None, None)
    assert "not published" in got["notes"][0]
    assert gw.fake.received == []


async def test_multipart_quote_reads_input_sizes_from_headers(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway("bfl")
    fields = {"model": "bfl/flux-2-pro", "prompt": "a hat", "size": "1920x1080"}
    status, got = await quote(gw.proxy, form(fields, png(1024, 1024)))
    assert status == 200, got
    assert got["operation"] == "edit"
    # Output 1920x1080 = 2.07 MP: $0.03 + 2 x $0.015; the 1024x1024 input is 1.05 MP:
    # 2 started megapixels at $0.015.
    assert got["max_cost"] == pytest.approx(0.09)
    assert got["pricing"]["shape"] == "per_megapixel"
    # Without a size the output megapixels are the provider's choice: no range.
    status, got = await quote(gw.proxy, form({**fields, "size": "auto"}, png()))
    assert (status, got["max_cost"]) == (200, None)
    assert "WIDTHxHEIGHT" in got["notes"][0]
    assert gw.fake.received == []


async def test_unpriced_and_unbounded_models_say_why(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway("stabilityai")
    status, got = await quote(
        gw.proxy,
        form({"model": "stabilityai/inpaint", "prompt": "x"}, png(), mask=png()),
    )
    assert status == 200, got
    assert (got["min_cost"], got["max_cost"]) == (None, None)
    assert "credit" in got["notes"][0]
    assert got["pricing"]["verdict"] == "not_found"
    # A model the catalogue does not know: no pricing at all.
    status, got = await quote(
        gw.proxy, form({"model": "stabilityai/new-endpoint", "prompt": "x"}, png())
    )
    assert (status, got["pricing"], got["max_cost"]) == (200, None, None)
    assert got["notes"] == ["the model is not in the catalogue"]
    assert gw.fake.received == []


async def test_quote_validates_like_an_edit(start_gateway: StartGateway) -> None:
    gw = await start_gateway("google")
    model = "google/gemini-3.1-flash-image"
    cases: list[tuple[Any, int, str | None]] = [
        ({"model": model, "prompt": "x", "n": 0}, 400, "n"),
        ({"model": model, "prompt": "x", "operation": "vary"}, 400, "operation"),
        ({"model": model, "operation": "edit", "prompt": "x"}, 400, "images"),
        (form({"model": model, "prompt": "x"}, png(), mask=png()), 400, "mask"),
        ({"model": model, "prompt": "x", "size": "9000x9000"}, 400, "size"),
        ({"model": RETIRED, "prompt": "x"}, 410, "model"),
    ]
    for body, code, param in cases:
        status, got = await quote(gw.proxy, body)
        assert status == code, (body, got)
        assert got["error"]["param"] == param, got
    status, got = await quote(
        gw.proxy, form({"model": model, "prompt": "x"}, png(), png())
    )
    assert status == 200, got
    # Fifteen inputs: one more than the model takes, named as an edit names it.
    images = [data_url(png())] * 15
    status, got = await quote(
        gw.proxy, {"model": model, "prompt": "x", "images": images}
    )
    assert (status, got["error"]["param"]) == (400, "images")
    assert gw.fake.received == []


async def test_quote_spends_no_budget_and_its_max_is_the_budgets_worst_case(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(
        "openai", keys={"team-a": key_entry(KEY_A, budget_usd_day=0.1)}
    )
    body = {"model": "openai/gpt-image-2", "prompt": "a cat",
            "size": "1024x1024", "quality": "high"}  # fmt: skip
    quotes = [await quote(gw.proxy, body, key=KEY_A) for _ in range(3)]
    assert [status for status, _ in quotes] == [200] * 3  # over budget: still quoted
    most = quotes[-1][1]["max_cost"]
    assert most == pytest.approx((7024 * 30 + 5 * 5) / 1e6)
    # The generation itself is refused for exactly that worst case, with the whole
    # budget left: the quotes spent nothing.
    status, refused, _ = await generate(gw.proxy, KEY_A, **body)
    assert status == 429
    message = refused["error"]["message"]
    assert f"may cost up to ${most:g}, more than the $0.1 left" in message
    assert gw.fake.received == []


async def test_multipart_quote_keeps_no_file(
    start_gateway: StartGateway, temp_root: Path
) -> None:
    # Nothing held in memory past the header: an edit of the same body (spool 0)
    # writes its image to a temp file, the quote never does.
    gw = await start_gateway("openai", limits={"spool_bytes": 0})
    big = sized_png(6 * 1024 * 1024)
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(len(leftover_files(temp_root)))
            await asyncio.sleep(0.001)

    fields = {"model": "openai/gpt-image-2", "prompt": "a hat"}
    for path, expect_files in (("/v3/images/edits", True), ("/v3/images/quote", False)):
        seen.clear()
        done.clear()
        watcher = asyncio.ensure_future(watch())
        status, got = await quote(gw.proxy, form(fields, big), path=path)
        done.set()
        await watcher
        assert status == 200, got
        assert (max(seen) > 0) is expect_files, path
    assert len(gw.fake.received) == 1  # the edit only
