"""Uploads forwarded while they arrive (``proxy.forward``): a fields-first edit's image
reaches the provider before the client sent its last byte; anything that fails, or a
form that cannot go as it arrives, never gives the provider a complete request."""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, Gateway, StartGateway
from tests.fakes.arriving import ArrivingOpenAI
from tests.gateway import KEY_A, eventually, key_entry
from tests.images import png, sized_png
from tests.integration.test_budgets import COST, left

B = "forward-test-boundary"
FIELDS = {"model": "openai/gpt-image-2", "prompt": "a hat", "size": "1024x1024"}
MiB = 1024 * 1024
FIRST = 512 * 1024  # what the client sends of the image before it waits


def field(name: str, value: str) -> bytes:
    return (
        f'--{B}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def file_head(name: str = "image", filename: str = "a.png") -> bytes:
    return (
        f'--{B}\r\nContent-Disposition: form-data; name="{name}"; '
        f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()


def fields(values: dict[str, str] = FIELDS) -> bytes:
    return b"".join(field(k, v) for k, v in values.items())


END = f"--{B}--\r\n".encode()

Step = bytes | Callable[[], Awaitable[None]]


async def post(
    proxy: TestServer,
    steps: list[Step],
    key: str = CLIENT_KEY,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """A multipart edit sent in ``steps``: bytes are sent, callables awaited between
    them (a client that pauses mid-body)."""

    async def body() -> AsyncIterator[bytes]:
        for step in steps:
            if isinstance(step, bytes):
                yield step
            else:
                await step()

    async with (
        aiohttp.ClientSession() as s,
        s.post(
            proxy.make_url("/v3/images/edits"),
            data=body(),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": f"multipart/form-data; boundary={B}",
                **(headers or {}),
            },
        ) as r,
    ):
        return r.status, await r.json()


# Forwarding from the first byte: the default (8 MiB) would spool these small uploads.
FORWARD_ALL = {"forward_min_bytes": 1}


async def gateway(start_gateway: StartGateway, **sections: Any) -> Gateway:
    fake = ArrivingOpenAI(UPSTREAM_KEY)
    sections["limits"] = {**FORWARD_ALL, **sections.get("limits", {})}
    return await start_gateway("openai", fake=fake, **sections)


async def test_fields_first_image_reaches_the_provider_before_the_client_finishes(
    start_gateway: StartGateway,
) -> None:
    gw = await gateway(start_gateway)
    fake: ArrivingOpenAI = gw.fake
    image = sized_png(3 * MiB)
    sent_all = False

    async def provider_has_the_first_bytes() -> None:
        await fake.seen(FIRST // 2)
        assert not sent_all

    status, body = await post(
        gw.proxy,
        [
            fields() + file_head() + image[:FIRST],
            provider_has_the_first_bytes,
            image[FIRST:] + b"\r\n" + END,
        ],
    )
    sent_all = True
    assert status == 200, body
    assert fake.chunked == [True]
    assert fake.incomplete == []
    got = fake.last
    assert got.fields == {
        "model": ["gpt-image-2"], "prompt": ["a hat"], "size": ["1024x1024"]
    }  # fmt: skip
    assert [(f.name, f.filename, f.content_type) for f in got.files] == [
        ("image", "a.png", "image/png")
    ]
    assert got.files[0].data == image
    # The bytes sent upstream are counted, though no length was declared.
    async with (
        aiohttp.ClientSession() as s,
        s.get(gw.proxy.make_url("/metrics")) as r,
    ):
        exposition = await r.text()
    sent = re.search(
        r'imagegate_upstream_sent_bytes_total\{provider="openai"\} (\S+)', exposition
    )
    assert sent is not None
    assert float(sent[1]) >= len(image)


async def test_an_image_in_whole_at_once_is_spooled(
    start_gateway: StartGateway,
) -> None:
    # Forwarding it would gain nothing over the spooled run and cost its CPU.
    gw = await gateway(start_gateway)
    fake: ArrivingOpenAI = gw.fake
    image = png(64, 64, seed=4)
    status, body = await post(
        gw.proxy, [fields() + file_head() + image + b"\r\n" + END]
    )
    assert status == 200, body
    assert fake.chunked == [False]
    assert fake.last.files[0].data == image


async def test_files_first_still_spools(start_gateway: StartGateway) -> None:
    gw = await gateway(start_gateway)
    fake: ArrivingOpenAI = gw.fake
    image = sized_png(2 * MiB)
    early: list[int] = []

    async def nothing_sent_yet() -> None:
        await asyncio.sleep(0.3)
        early.append(fake.arrived)

    status, body = await post(
        gw.proxy,
        [file_head() + image + b"\r\n", nothing_sent_yet, fields() + END],
    )
    assert status == 200, body
    assert early == [0]
    assert fake.chunked == [False]  # a Content-Length: the spooled form
    assert fake.last.files[0].data == image


async def test_sdk_edit_forwarded_is_what_the_spooled_path_sends(
    start_gateway: StartGateway,
) -> None:
    gw = await gateway(start_gateway)
    fake: ArrivingOpenAI = gw.fake
    # Over what one socket read brings: an image that is in whole at once is spooled.
    image = png(64, 64, seed=3) + b"\x00" * (2 * MiB)
    sdk = gw.sdk()
    await sdk.images.edit(
        model="openai/gpt-image-2", image=("cat.png", image, "image/png"),
        prompt="a hat", size="1024x1024", quality="low", n=2,
    )  # fmt: skip
    values = {**FIELDS, "quality": "low", "n": "2"}
    status, body = await post(
        gw.proxy, [file_head(filename="cat.png") + image + b"\r\n", fields(values), END]
    )
    assert status == 200, body
    assert fake.chunked == [True, False]  # forwarded, then spooled
    forwarded, spooled = fake.received
    assert forwarded.fields == spooled.fields
    assert forwarded.fields["n"] == ["2"]
    assert [(f.name, f.filename, f.content_type, f.data) for f in forwarded.files] == [
        (f.name, f.filename, f.content_type, f.data) for f in spooled.files
    ]
    assert forwarded.files[0].data == image


async def test_an_image_over_the_cap_mid_stream_never_completes_upstream(
    start_gateway: StartGateway,
) -> None:
    gw = await gateway(start_gateway, limits={"max_file_bytes": MiB})
    fake: ArrivingOpenAI = gw.fake
    image = sized_png(2 * MiB)

    async def forwarding() -> None:
        await fake.seen(FIRST // 2)

    status, body = await post(
        gw.proxy,
        [
            fields() + file_head() + image[:FIRST],
            forwarding,
            image[FIRST:] + b"\r\n" + END,
        ],
    )
    await eventually(lambda: _true(bool(fake.incomplete)))
    assert fake.received == []
    assert fake.incomplete[0] > FIRST // 2
    # The answer a spooled request gets: the same status and error, word for word.
    spooled = await post(gw.proxy, [file_head() + image + b"\r\n", fields(), END])
    assert (status, body) == spooled
    assert status == 413
    assert body["error"]["param"] == "image"
    assert fake.received == []


async def test_a_list_of_images_is_spooled_from_the_start(
    start_gateway: StartGateway,
) -> None:
    # ``image[]`` is the SDKs' list: a second image follows and would cut a forward
    # off (the edit then went upstream twice), so the form is not forwarded at all.
    gw = await gateway(start_gateway)
    fake: ArrivingOpenAI = gw.fake
    first, second = sized_png(MiB), png(8, 8, seed=5)
    status, body = await post(
        gw.proxy,
        [
            fields() + file_head("image[]") + first[:FIRST],
            first[FIRST:] + b"\r\n" + file_head("image[]", "b.png") + second + b"\r\n",
            END,
        ],
    )
    assert status == 200, body
    assert len(fake.received) == 1
    assert fake.chunked == [False]
    assert fake.incomplete == []
    files = fake.last.files
    assert [(f.name, f.data) for f in files] == [
        ("image[]", first),
        ("image[]", second),
    ]


@pytest.mark.parametrize("where", ["before the provider", "while forwarding"])
async def test_a_client_that_leaves_mid_body_is_not_charged(
    start_gateway: StartGateway, where: str
) -> None:
    budget = 0.5
    gw = await gateway(
        start_gateway, keys={"team-a": key_entry(KEY_A, budget_usd_day=budget)}
    )
    fake: ArrivingOpenAI = gw.fake
    image = sized_png(2 * MiB)

    async def leave() -> None:
        if where == "while forwarding":
            await fake.seen(FIRST // 2)
        raise ConnectionAbortedError("the client gives up")

    with pytest.raises((aiohttp.ClientError, ConnectionAbortedError)):
        await post(gw.proxy, [fields() + file_head() + image[:FIRST], leave], KEY_A)
    if where == "while forwarding":
        await eventually(lambda: _true(bool(fake.incomplete)))
    await asyncio.sleep(0.2)  # the proxy's side of it settles
    assert fake.received == []
    assert await left(gw.proxy) == pytest.approx(budget)
    # A forwarded edit that completes is charged once, what it cost.
    status, body = await post(
        gw.proxy, [fields() + file_head() + image + b"\r\n" + END], KEY_A
    )
    assert status == 200, body
    assert fake.chunked == [True]
    assert await left(gw.proxy) == pytest.approx(budget - COST, abs=1e-6)


async def test_a_pixel_bomb_never_reaches_the_provider(
    start_gateway: StartGateway,
) -> None:
    gw = await gateway(start_gateway)
    fake: ArrivingOpenAI = gw.fake
    bomb = bytearray(sized_png(MiB))
    bomb[16:24] = struct.pack(">II", 13000, 13000)  # the IHDR's width and height
    status, body = await post(
        gw.proxy, [fields() + file_head() + bytes(bomb) + b"\r\n" + END]
    )
    assert status == 400, body
    assert body["error"]["code"] == "image_too_large"
    assert body["error"]["param"] == "image"
    assert fake.arrived == 0  # refused before the provider's request was opened
    assert fake.received == []
    assert fake.incomplete == []


async def test_a_field_after_the_image_runs_from_the_spooled_parts(
    start_gateway: StartGateway,
) -> None:
    gw = await gateway(start_gateway)
    fake: ArrivingOpenAI = gw.fake
    image = sized_png(MiB)

    async def forwarding() -> None:
        await fake.seen(FIRST // 2)

    values = {"model": "openai/gpt-image-2", "prompt": "a hat"}
    status, body = await post(
        gw.proxy,
        [
            fields(values) + file_head() + image[:FIRST],
            forwarding,
            image[FIRST:] + b"\r\n" + field("quality", "low") + END,
        ],
    )
    assert status == 200, body
    await eventually(lambda: _true(bool(fake.incomplete)))
    assert fake.chunked == [False]
    assert fake.last.fields["quality"] == ["low"]
    assert fake.last.files[0].data == image


async def test_an_idempotent_edit_is_spooled(start_gateway: StartGateway) -> None:
    gw = await gateway(start_gateway)
    fake: ArrivingOpenAI = gw.fake
    steps: list[Step] = [fields() + file_head() + sized_png(MiB) + b"\r\n" + END]
    first = await post(gw.proxy, steps, headers={"Idempotency-Key": "forward-1"})
    again = await post(gw.proxy, steps, headers={"Idempotency-Key": "forward-1"})
    assert first[0] == 200, first
    assert again == first  # kept and replayed
    assert fake.chunked == [False]  # its fingerprint needs the whole file first


async def test_a_forwarded_edit_s_large_reply_is_relayed(
    start_gateway: StartGateway,
) -> None:
    gw = await gateway(start_gateway)
    fake: ArrivingOpenAI = gw.fake
    fake.image_b64 = "QUJD" * 100_000  # 400 KB: past what is held, relayed
    image = sized_png(MiB)
    status, body = await post(
        gw.proxy, [fields() + file_head() + image + b"\r\n" + END]
    )
    assert status == 200, body
    assert body["data"] == [{"b64_json": fake.image_b64}]
    assert body["provider"] == "openai"
    assert body["cost"] is not None
    assert fake.chunked == [True]
    assert fake.last.files[0].data == image


async def _true(value: bool) -> bool:
    return value
