"""Large images' base64 encoded in slices and spliced into the JSON body as it is sent
(``_prepare.splice``): the bytes upstream are those of the one-piece body."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.formwriter import InMemoryBody, Spliced
from proxy.models import EditJob, StoredImage
from proxy.providers import bfl
from proxy.providers._prepare import SLICE, SPLICE_OVER, Needs, prepare, splice
from tests.images import png

# Past two slices and not a multiple of 3: the last slice carries base64 padding.
BIG = png(8, 8) + os.urandom(2 * SLICE + 7)
LOOKALIKE = "imagegate-b64-" + "0" * 32  # shaped like a token, but the client's


def _job(*images: StoredImage, model: str = "flux-kontext-pro") -> EditJob:
    return EditJob(operation="edit", provider="bfl", model=model,
                   prompt=f"a hat {LOOKALIKE}", source="multipart",
                   images=images)  # fmt: skip


def _stored(data: bytes, tmp: Path | None) -> StoredImage:
    if tmp is None:
        return StoredImage("image/png", len(data), "a.png", data=data)
    path = tmp / "a.png"
    path.write_bytes(data)
    return StoredImage("image/png", len(data), "a.png", path=str(path))


@pytest.mark.parametrize("on_disk", [False, True])
async def test_spliced_body_is_the_one_piece_body(
    tmp_path: Path, on_disk: bool
) -> None:
    small = StoredImage("image/png", 10, "b.png", data=png(4, 4))
    job = _job(_stored(BIG, tmp_path if on_disk else None), small)
    adapter = bfl.BFLAdapter(bfl.Config())
    needs = adapter.needs(job)
    whole = adapter.build(job, await prepare(job, needs)).body
    prepared = await prepare(job, needs, splice=True)
    call = splice(adapter.build(job, prepared), prepared)
    assert isinstance(call.body, Spliced)
    assert isinstance(whole, bytes)
    assert call.body.joined() == whole
    assert call.body.size == len(whole)
    assert base64.b64encode(BIG) in whole
    assert LOOKALIKE.encode() in whole  # the client's text is left as it is
    (_, slices), = prepared.slices  # fmt: skip
    assert len(slices) == 3
    assert max(len(s) for s in slices) == SLICE * 4 // 3
    # The small image is text as before: only images past SPLICE_OVER are sliced.
    assert prepared.images[1] == base64.b64encode(png(4, 4)).decode()


async def test_small_images_and_unspliced_calls_are_unchanged() -> None:
    data = png(8, 8) + bytes(SPLICE_OVER - 1000)
    job = _job(StoredImage("image/png", len(data), "a.png", data=data))
    adapter = bfl.BFLAdapter(bfl.Config())
    prepared = await prepare(job, adapter.needs(job), splice=True)
    assert prepared.slices == ()
    call = adapter.build(job, prepared)
    assert splice(call, prepared) is call


async def test_a_converted_mask_is_not_also_encoded_as_sent() -> None:
    image = StoredImage("image/png", 10, "a.png", data=png(4, 4))
    mask = StoredImage("image/png", 10, "m.png", data=png(4, 4, alpha=0))
    job = EditJob(operation="edit", provider="bfl", model="flux-pro-1.0-fill",
                  prompt="p", source="multipart", images=(image,),
                  mask=mask)  # fmt: skip
    prepared = await prepare(job, Needs(base64=True, edit_mask="white"))
    assert prepared.mask is None
    assert prepared.edit_mask_b64 is not None
    kept = await prepare(job, Needs(base64=True))
    assert kept.mask == base64.b64encode(png(4, 4, alpha=0)).decode()


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {"length": request.headers.get("Content-Length"), "body": body.hex()}
    )


@pytest.mark.parametrize("cut", [None, 5])
async def test_in_memory_body_sends_the_pieces_in_order(cut: int | None) -> None:
    pieces = (b'{"a":"', b"x" * 300_000, b"y" * 7, b'"}')
    whole = b"".join(pieces)
    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/", _echo)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        body = InMemoryBody(Spliced(pieces))
        assert body.size == len(whole)
        if cut is not None:  # a length cuts the body, as for bytes
            writer: Any = _Sink()
            await body.write_with_length(writer, cut)
            assert writer.data == whole[:cut]
            return
        async with session.post(server.make_url("/"), data=body) as r:
            got = await r.json()
    assert got == {"length": str(len(whole)), "body": whole.hex()}


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    async def write(self, chunk: bytes | memoryview) -> None:
        self.data += bytes(chunk)
