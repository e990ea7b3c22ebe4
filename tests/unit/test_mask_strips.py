"""The mask conversion works a strip of rows at a time (``proxy.masks``, so that the
event loop gets the GIL between strips): its PNG must be byte for byte the one the
whole-image conversion made, for every kind of mask and both polarities."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image, ImageOps

from proxy import masks

W, H = 61, 47  # strips of 5 rows (below) and a ragged last one


def _whole(mask_png: bytes, invert: bool) -> bytes:
    """The conversion as it was done before strips: whole-image Pillow calls."""
    mask = Image.open(io.BytesIO(mask_png))
    if "A" in mask.getbands():
        out = mask.getchannel("A").point(lambda a: 255 if a == 0 else 0)
    elif mask.has_transparency_data:
        alpha = mask.convert("RGBA").getchannel("A")
        out = alpha.point(lambda a: 255 if a == 0 else 0)
    elif mask.mode.startswith("I;16"):
        out = mask.convert("I").point(
            [255 if v >= 32768 else 0 for v in range(65536)], "L"
        )
    else:
        out = mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    if invert:
        out = ImageOps.invert(out.convert("L"))
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def _png(image: Image.Image, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **params)
    return buf.getvalue()


def _noise(mode: str, bands: int) -> Image.Image:
    # Noise with runs of 0 and 255, so that every branch has both answers.
    raw = bytearray(os.urandom(W * H * bands))
    for i in range(0, len(raw), 7):
        raw[i] = 0 if i % 2 else 255
    return Image.frombytes(mode, (W, H), bytes(raw))


def _masks() -> dict[str, bytes]:
    palette = _noise("P", 1)
    palette.putpalette(os.urandom(768))
    sixteen = Image.frombytes("I;16", (W, H), os.urandom(W * H * 2))
    return {
        "RGBA": _png(_noise("RGBA", 4)),
        "LA": _png(_noise("LA", 2)),
        "P+tRNS": _png(palette, transparency=bytes([0, 255, 7, 0] * 64)),
        "P": _png(palette),
        "RGB+tRNS": _png(_noise("RGB", 3), transparency=(0, 0, 0)),
        "L": _png(_noise("L", 1)),
        "RGB": _png(_noise("RGB", 3)),
        "I;16": _png(sixteen),
        "1": _png(_noise("L", 1).convert("1")),
    }


@pytest.mark.parametrize("kind", list(_masks()))
@pytest.mark.parametrize("invert", [False, True])
def test_strips_give_the_whole_image_conversion_s_bytes(
    kind: str, invert: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(masks, "STRIP_PIXELS", 5 * W + 3)
    mask = _masks()[kind]
    first = _png(Image.new("RGB", (W, H)))
    got = masks._convert(io.BytesIO(mask), io.BytesIO(first), W * H, invert=invert)
    assert got == _whole(mask, invert)
    assert Image.open(io.BytesIO(got)).size == (W, H)


def test_a_mask_narrower_than_a_strip_is_one_strip() -> None:
    mask = _masks()["RGBA"]
    first = _png(Image.new("RGB", (W, H)))
    got = masks._convert(io.BytesIO(mask), io.BytesIO(first), W * H)
    assert got == _whole(mask, False)
