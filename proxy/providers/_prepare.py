"""Image preparation, done once before a provider's ``build``: every file read, base64
encoding and mask conversion an adapter needs, so that ``build`` stays pure.

An adapter declares what it needs for a job (``Needs``); ``prepare`` returns it
(``Prepared``). Inputs the proxy does not hold (a URL or a provider's file id) are left
as they are: ``build`` refuses them where the provider needs bytes (``image_b64``).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal, NamedTuple

import aiofiles
import pybase64

from proxy.formwriter import Spliced
from proxy.images import b64, require_stored
from proxy.masks import to_black_edit_mask, to_white_edit_mask
from proxy.models import EditJob, ImageInput, StoredImage

if TYPE_CHECKING:
    from proxy.providers._call import UpstreamCall

# Images over this are base64-encoded in slices, one per loop step, and their text is
# spliced into the JSON body as it is sent (``splice``), never one str: encoding,
# copying and JSON-escaping a 50 MiB image held the event loop for ~100 ms in one step
# (``bench/stall.py``, mask25mp).
SPLICE_OVER = 1024 * 1024
# Input bytes per slice, a multiple of 3 so that the slices' base64 concatenates to
# the whole's: 4 MiB of text, about 3 ms.
SLICE = 3 * 1024 * 1024
_TOKEN = re.compile(rb"imagegate-b64-[0-9a-f]{32}")


class Needs(NamedTuple):
    # The images (and the mask as sent, unless ``edit_mask`` converts it) as base64
    # text, for JSON upstreams.
    base64: bool = False
    # The mask converted from OpenAI's alpha to greyscale where this colour means edit.
    edit_mask: Literal["white", "black"] | None = None


class Prepared(NamedTuple):
    # Base64 of each image the proxy holds; None for a URL or file id, and for an
    # image that came as a data URL, which already holds its base64 (``image_b64``).
    images: tuple[str | None, ...] = ()
    # Base64 of the client's mask as sent.
    mask: str | None = None
    # The converted mask (PNG) and its base64.
    edit_mask: bytes | None = None
    edit_mask_b64: str | None = None
    # With ``prepare(..., splice=True)``: the base64 slices of each image over
    # ``SPLICE_OVER``, by the token that stands for its text in ``images``/``mask``.
    slices: tuple[tuple[str, tuple[bytes, ...]], ...] = ()


NOTHING = Prepared()
# Made once: an adapter's needs() returns one of these rather than a tuple per call.
NO_NEEDS = Needs()
BASE64 = Needs(base64=True)


async def _base64(
    image: ImageInput, slices: dict[str, tuple[bytes, ...]] | None
) -> str | None:
    # A client's data URL is reused, not decoded and encoded again (nor copied: an
    # OpenAI-shaped body sends it whole).
    if not isinstance(image, StoredImage) or image.b64 is not None:
        return None
    if slices is None or image.size <= SPLICE_OVER:
        return b64(await image.read())
    token = f"imagegate-b64-{secrets.token_hex(16)}"
    slices[token] = tuple([piece async for piece in _encoded_slices(image)])
    return token


async def _encoded_slices(image: StoredImage) -> AsyncIterator[bytes]:
    if image.data is not None:
        view = memoryview(image.data)
        for start in range(0, len(view), SLICE):
            yield pybase64.b64encode(view[start : start + SLICE])
            await asyncio.sleep(0)  # the next slice in the next loop step
        return
    assert image.path is not None
    async with aiofiles.open(image.path, "rb") as f:
        while chunk := await f.read(SLICE):
            yield pybase64.b64encode(chunk)


async def prepare(job: EditJob, needs: Needs, *, splice: bool = False) -> Prepared:
    """What ``needs`` asks for, read and converted (Pillow in a worker thread).

    With ``splice``, large images' base64 stands as tokens in the result: the
    caller's body goes through ``splice`` before it is sent."""
    if needs == NO_NEEDS:
        return NOTHING
    images: tuple[str | None, ...] = ()
    mask = None
    slices: dict[str, tuple[bytes, ...]] | None = {} if splice else None
    if needs.base64:
        images = tuple([await _base64(img, slices) for img in job.images])
        # An adapter that converts the mask sends the converted one only.
        if job.mask is not None and needs.edit_mask is None:
            mask = await _base64(job.mask, slices)
    edit_mask = None
    if needs.edit_mask is not None and job.mask is not None:
        stored = require_stored(job.mask, provider=job.provider, param="mask")
        first = require_stored(job.images[0], provider=job.provider, param="images[0]")
        if needs.edit_mask == "white":
            edit_mask = await to_white_edit_mask(stored, first)
        else:
            edit_mask = await to_black_edit_mask(stored, first)
    edit_b64 = None if edit_mask is None else b64(edit_mask)
    return Prepared(images, mask, edit_mask, edit_b64, tuple((slices or {}).items()))


def splice(call: UpstreamCall, prepared: Prepared) -> UpstreamCall:
    """``call`` with each token of ``prepared.slices`` in its JSON body replaced by
    that image's base64 slices (base64 needs no JSON escapes), as a ``Spliced`` body."""
    if not prepared.slices or not isinstance(call.body, bytes):
        return call
    found = dict(prepared.slices)
    body = call.body
    pieces: list[bytes] = []
    at = 0
    for match in _TOKEN.finditer(body):
        text = found.get(match.group().decode())
        if text is None:  # not ours: a client's field that looks like a token
            continue
        pieces += (body[at : match.start()], *text)
        at = match.end()
    pieces.append(body[at:])
    return call._replace(body=Spliced(tuple(pieces)))


def image_b64(job: EditJob, prepared: Prepared, index: int, *, provider: str) -> str:
    """The base64 of ``images[index]``; a 400 if the provider needs bytes it lacks."""
    param = f"images[{index}]"
    image = require_stored(job.images[index], provider=provider, param=param)
    if image.b64 is not None:
        return str(image.b64, "ascii")
    data = prepared.images[index]
    assert data is not None, "prepare() was not asked for base64"
    return data
