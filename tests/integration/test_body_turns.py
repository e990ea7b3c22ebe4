"""Request bodies handled in turns (``backpressure.max_body_reads``, issue 19): a
turn is held only while a chunk that arrived is handled, never while the client
is slow (the turns themselves: tests/unit/test_formreader.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.test_utils import TestServer

from tests.conftest import StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import Gate, edit_multipart
from tests.images import png

BOUNDARY = "turnsboundary"


def _form_parts(image: bytes) -> tuple[bytes, bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
        f"openai/gpt-image-2\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; "
        f'name="prompt"\r\n\r\na hat\r\n--{BOUNDARY}\r\nContent-Disposition: '
        f'form-data; name="image"; filename="a.png"\r\nContent-Type: image/png'
        "\r\n\r\n"
    ).encode()
    half = len(image) // 2
    return head + image[:half], image[half:] + f"\r\n--{BOUNDARY}--\r\n".encode()


async def _slow_edit(
    proxy: TestServer, first: bytes, rest: bytes, go_on: asyncio.Event
) -> int:
    async def body() -> AsyncIterator[bytes]:
        yield first
        await go_on.wait()
        yield rest

    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/edits"), data=body(), headers=headers) as r,
    ):
        await r.read()
        return r.status


async def test_a_client_pausing_mid_body_does_not_hold_a_turn(
    start_proxy: StartProxy, held: tuple[FakeOpenAI, Gate]
) -> None:
    fake, gate = held
    gate.open()
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        backpressure={"max_body_reads": 1, "max_inflight_share": 1},
    )
    first, rest = _form_parts(png())
    go_on = asyncio.Event()
    slow = asyncio.ensure_future(_slow_edit(proxy, first, rest, go_on))
    await asyncio.sleep(0.3)  # the slow edit's first half is read; it waits for more
    # The one turn is free while the slow client sends nothing: another edit is
    # served meanwhile (a turn held for a whole body let 64 drippers stall all).
    status, _, _ = await edit_multipart(proxy, None)
    assert status == 200
    assert not slow.done()
    go_on.set()
    assert await slow == 200
    assert len(fake.received) == 2
