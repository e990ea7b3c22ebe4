"""``upstream_reply.read_capped``: a whole reply's bytes, sized or chunked, small or
past ``JOIN_OFF_LOOP`` (joined in a worker thread), and the cap on either."""

from __future__ import annotations

import os

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.errors import UpstreamProtocolError
from proxy.upstream_reply import JOIN_OFF_LOOP, read_capped

BIG = os.urandom(JOIN_OFF_LOOP + 12345)
SMALL = os.urandom(1000)


async def _reply(request: web.Request) -> web.StreamResponse:
    body = BIG if request.query["size"] == "big" else SMALL
    if request.query["framing"] == "sized":
        return web.Response(body=body)
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for start in range(0, len(body), 100_000):
        await resp.write(body[start : start + 100_000])
    await resp.write_eof()
    return resp


async def _read(size: str, framing: str, cap: int) -> bytes:
    app = web.Application()
    app.router.add_get("/", _reply)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        url = server.make_url("/").with_query(size=size, framing=framing)
        async with session.get(url) as resp:
            return await read_capped(resp, cap, "p")


@pytest.mark.parametrize("framing", ["sized", "chunked"])
@pytest.mark.parametrize(("size", "want"), [("big", BIG), ("small", SMALL)])
async def test_whole_reply_bytes(framing: str, size: str, want: bytes) -> None:
    assert await _read(size, framing, cap=len(BIG)) == want


@pytest.mark.parametrize("framing", ["sized", "chunked"])
async def test_over_the_cap_is_refused(framing: str) -> None:
    with pytest.raises(UpstreamProtocolError) as exc:
        await _read("big", framing, cap=len(BIG) - 1)
    assert exc.value.code == "upstream_reply_too_large"
