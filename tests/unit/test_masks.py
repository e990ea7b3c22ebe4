"""Mask conversion, checked pixel by pixel."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from proxy.errors import InvalidRequest
from proxy.masks import to_white_edit_mask
from proxy.models import StoredImage
from tests.images import png


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
