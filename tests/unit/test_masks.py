"""Mask conversion, checked pixel by pixel."""

from __future__ import annotations

import base64
import io
import zlib
from pathlib import Path

import pytest
from PIL import Image

from proxy import pixels
from proxy.errors import InvalidRequest
from proxy.masks import to_white_edit_mask
from proxy.models import StoredImage
from tests.images import flat_png, png, png_chunk


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _stored(data: bytes, name: str = "x.png") -> StoredImage:
    return StoredImage("image/png", len(data), name, data=data)


def _alpha_mask(width: int, height: int, transparent: set[tuple[int, int]]) -> bytes:
    img = Image.new("RGBA", (width, height), (10, 20, 30, 255))
    for x, y in transparent:
        img.putpixel((x, y), (10, 20, 30, 0))
    return _png(img)


async def test_alpha_zero_becomes_white_everything_else_black() -> None:
    edit = {(0, 0), (1, 2), (3, 3)}
    # A half-transparent pixel is not "fully transparent": kept (black).
    img = Image.open(io.BytesIO(_alpha_mask(4, 4, edit))).convert("RGBA")
    img.putpixel((2, 1), (0, 0, 0, 128))
    out = await to_white_edit_mask(_stored(_png(img)), _stored(png(4, 4)))
    result = Image.open(io.BytesIO(out))
    assert result.format == "PNG"
    assert result.mode == "L"
    assert result.size == (4, 4)
    for y in range(4):
        for x in range(4):
            expected = 255 if (x, y) in edit else 0
            assert result.getpixel((x, y)) == expected, (x, y)


async def test_mask_without_alpha_is_thresholded_as_black_and_white() -> None:
    img = Image.new("L", (3, 2), 0)
    img.putpixel((0, 0), 255)
    img.putpixel((1, 0), 200)
    img.putpixel((2, 1), 100)
    out = await to_white_edit_mask(_stored(_png(img)), _stored(png(3, 2)))
    result = Image.open(io.BytesIO(out))
    pixels = [result.getpixel((x, y)) for y in range(2) for x in range(3)]
    assert pixels == [255, 255, 0, 0, 0, 0]


async def test_palette_mask_with_transparency() -> None:
    img = Image.new("P", (2, 2), 0)
    img.putpalette([0, 0, 0, 255, 255, 255])
    img.putpixel((1, 1), 1)
    img.info["transparency"] = 1
    out = await to_white_edit_mask(_stored(_png(img)), _stored(png(2, 2)))
    result = Image.open(io.BytesIO(out))
    assert [result.getpixel((x, y)) for y in range(2) for x in range(2)] == [
        0, 0, 0, 255,
    ]  # fmt: skip


async def test_reads_temp_files(tmp_path: Path) -> None:
    mask_path = tmp_path / "mask.png"
    first_path = tmp_path / "first.png"
    mask_path.write_bytes(_alpha_mask(2, 2, {(1, 0)}))
    first_path.write_bytes(png(2, 2))
    mask = StoredImage("image/png", mask_path.stat().st_size, "m", path=str(mask_path))
    first = StoredImage(
        "image/png", first_path.stat().st_size, "f", path=str(first_path)
    )
    result = Image.open(io.BytesIO(await to_white_edit_mask(mask, first)))
    assert [result.getpixel((x, y)) for y in range(2) for x in range(2)] == [
        0,
        255,
        0,
        0,
    ]


async def test_size_mismatch_is_a_400_on_mask() -> None:
    with pytest.raises(InvalidRequest) as exc:
        await to_white_edit_mask(_stored(_alpha_mask(4, 4, set())), _stored(png(8, 4)))
    assert exc.value.param == "mask"
    assert "4x4" in exc.value.message
    assert "8x4" in exc.value.message


async def test_unreadable_images_are_400s() -> None:
    with pytest.raises(InvalidRequest) as exc:
        await to_white_edit_mask(
            _stored(b"\x89PNG\r\n\x1a\nnot really"), _stored(png())
        )
    assert exc.value.param == "mask"
    with pytest.raises(InvalidRequest) as exc:
        await to_white_edit_mask(_stored(png()), _stored(b"junk"))
    assert exc.value.param == "images[0]"


async def test_truncated_mask_pixels_are_a_400() -> None:
    whole = _alpha_mask(64, 64, {(1, 1)})
    with pytest.raises(InvalidRequest) as exc:
        await to_white_edit_mask(
            _stored(whole[: len(whole) - 30]), _stored(png(64, 64))
        )
    assert exc.value.param == "mask"


def _grey16(values: list[int]) -> bytes:
    img = Image.new("I;16", (len(values), 1))
    for x, v in enumerate(values):
        img.putpixel((x, 0), v)
    return _png(img)


async def test_16_bit_mask_thresholds_at_its_own_mid_range() -> None:
    # Clipping to 8 bits would make a near-black 1000 of 65535 white.
    mask = _grey16([0, 1000, 32767, 32768, 65535])
    out = await to_white_edit_mask(_stored(mask), _stored(png(5, 1)))
    result = Image.open(io.BytesIO(out))
    assert [result.getpixel((x, 0)) for x in range(5)] == [0, 0, 0, 255, 255]


async def test_grey_alpha_mask_uses_its_alpha() -> None:
    img = Image.new("LA", (2, 1), (200, 255))
    img.putpixel((1, 0), (200, 0))
    out = await to_white_edit_mask(_stored(_png(img)), _stored(png(2, 1)))
    result = Image.open(io.BytesIO(out))
    assert [result.getpixel((x, 0)) for x in range(2)] == [0, 255]


async def test_animated_mask_converts_its_first_frame() -> None:
    frames = [Image.new("RGBA", (2, 1), (0, 0, 0, a)) for a in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    out = await to_white_edit_mask(_stored(buf.getvalue()), _stored(png(2, 1)))
    result = Image.open(io.BytesIO(out))
    assert [result.getpixel((x, 0)) for x in range(2)] == [255, 255]


async def test_first_image_whose_header_is_past_the_head_is_sized_by_pillow() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (3, 2)).save(buf, format="JPEG", icc_profile=bytes(100_000))
    out = await to_white_edit_mask(
        _stored(_alpha_mask(3, 2, set())), _stored(buf.getvalue())
    )
    assert Image.open(io.BytesIO(out)).size == (3, 2)


async def test_mask_over_the_gate_cap_is_refused_before_decoding() -> None:
    token = pixels.GATE.set(pixels.PixelGate(max_pixels=399))
    try:
        with pytest.raises(InvalidRequest) as exc:
            await to_white_edit_mask(_stored(flat_png(20, 20)), _stored(png(19, 21)))
        assert (exc.value.param, exc.value.code) == ("mask", "image_too_large")
        with pytest.raises(InvalidRequest) as exc:
            await to_white_edit_mask(_stored(png(19, 21)), _stored(flat_png(20, 20)))
        assert (exc.value.param, exc.value.code) == ("images[0]", "image_too_large")
    finally:
        pixels.GATE.reset(token)


@pytest.mark.parametrize("limit", [150, 300], ids=["bomb error", "bomb warning"])
async def test_pillow_bomb_limit_is_a_400_too(
    monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    # Pillow errors past twice its limit and warns past it (an error under pytest,
    # as in the proxy after configure_pillow).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(InvalidRequest) as exc:
        await to_white_edit_mask(_stored(flat_png(20, 20)), _stored(png(20, 20)))
    assert (exc.value.param, exc.value.code) == ("mask", "image_too_large")


async def test_png_text_chunk_bomb_is_a_400() -> None:
    text = png_chunk(b"zTXt", b"k\0\0" + zlib.compress(bytes(1024 * 1024), 9))
    mask = flat_png(4, 4, color_type=4, before_idat=text * 80)
    with pytest.raises(InvalidRequest) as exc:
        await to_white_edit_mask(_stored(mask), _stored(png(4, 4)))
    assert (exc.value.param, exc.value.code) == ("mask", "invalid_image")


@pytest.mark.parametrize(
    "mask",
    [
        b"\x89PNG\r\n\x1a\n" + b"\xff\xd8\xff\xe0" + bytes(64),  # PNG head, JPEG body
        _png(Image.new("L", (4, 4)))[:33] + png_chunk(b"IDAT", b"\x78\x9c\xff\xff"),
        png_chunk(b"IHDR", bytes(13)),
    ],
    ids=["jpeg polyglot", "corrupt zlib", "no signature"],
)
async def test_malformed_masks_are_400s(mask: bytes) -> None:
    with pytest.raises(InvalidRequest) as exc:
        await to_white_edit_mask(_stored(mask), _stored(png(4, 4)))
    assert exc.value.param == "mask"


async def test_a_mask_held_as_base64_converts_like_one_held_as_bytes() -> None:
    # A big data URL's image is kept as its base64 (proxy.json_body) and decoded
    # only where bytes are needed, as here.
    mask = _alpha_mask(6, 4, {(0, 0), (5, 3)})
    image = png(6, 4)

    def held(data: bytes) -> StoredImage:
        return StoredImage("image/png", len(data), "", b64=base64.b64encode(data))

    as_bytes = await to_white_edit_mask(_stored(mask), _stored(image))
    assert await to_white_edit_mask(held(mask), held(image)) == as_bytes
