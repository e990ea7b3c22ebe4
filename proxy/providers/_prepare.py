"""Image preparation, done once before a provider's ``build``: every file read, base64
encoding and mask conversion an adapter needs, so that ``build`` stays pure.

An adapter declares what it needs for a job (``Needs``); ``prepare`` returns it
(``Prepared``). Inputs the proxy does not hold (a URL or a provider's file id) are left
as they are: ``build`` refuses them where the provider needs bytes (``image_b64``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from proxy.images import b64, require_stored
from proxy.masks import to_black_edit_mask, to_white_edit_mask
from proxy.models import EditJob, ImageInput, StoredImage


class Needs(NamedTuple):
    # The images (and the mask as sent) as base64 text, for JSON upstreams.
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


NOTHING = Prepared()


async def _base64(image: ImageInput) -> str | None:
    # A client's data URL is reused, not decoded and encoded again (nor copied: an
    # OpenAI-shaped body sends it whole).
    if not isinstance(image, StoredImage) or image.b64 is not None:
        return None
    return b64(await image.read())


async def prepare(job: EditJob, needs: Needs) -> Prepared:
    """What ``needs`` asks for, read and converted (Pillow in a worker thread)."""
    if needs == Needs():
        return NOTHING
    images: tuple[str | None, ...] = ()
    mask = None
    if needs.base64:
        images = tuple([await _base64(img) for img in job.images])
        mask = None if job.mask is None else await _base64(job.mask)
    edit_mask = None
    if needs.edit_mask is not None and job.mask is not None:
        stored = require_stored(job.mask, provider=job.provider, param="mask")
        first = require_stored(job.images[0], provider=job.provider, param="images[0]")
        if needs.edit_mask == "white":
            edit_mask = await to_white_edit_mask(stored, first)
        else:
            edit_mask = await to_black_edit_mask(stored, first)
    return Prepared(
        images, mask, edit_mask, None if edit_mask is None else b64(edit_mask)
    )


def image_b64(job: EditJob, prepared: Prepared, index: int, *, provider: str) -> str:
    """The base64 of ``images[index]``; a 400 if the provider needs bytes it lacks."""
    param = f"images[{index}]"
    image = require_stored(job.images[index], provider=provider, param=param)
    if image.b64 is not None:
        return str(image.b64, "ascii")
    data = prepared.images[index]
    assert data is not None, "prepare() was not asked for base64"
    return data
