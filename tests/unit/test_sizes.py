"""size → provider aspect ratios and tiers: the tables, case by case."""

from __future__ import annotations

from fractions import Fraction

import pytest

from proxy.errors import InvalidRequest
from proxy.providers._sizes import (
    GEMINI_ASPECT_RATIOS,
    STABILITY_ASPECT_RATIOS,
    Size,
    aspect_ratio,
    gemini_image_size,
    parse_size,
    require_auto,
)

# A short list of ratios (as Imagen had): 2:3 and 21:9 are not in it.
FIVE_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")


@pytest.mark.parametrize(
    ("size", "parsed"),
    [
        (None, None),
        ("auto", None),
        ("1024x1536", Size(Fraction(2, 3), 1024, 1536)),
        ("1536x1024", Size(Fraction(3, 2), 1536, 1024)),
        ("16:9", Size(Fraction(16, 9))),
    ],
)
def test_parse_size(size: str | None, parsed: Size | None) -> None:
    assert parse_size(size) == parsed


@pytest.mark.parametrize("size", ["big", "0x100", "1024*1024", "16/9", "1024x", "0:1"])
def test_parse_size_refuses_garbage(size: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_size(size)
    assert exc.value.param == "size"
    assert "WIDTHxHEIGHT" in exc.value.message


@pytest.mark.parametrize(
    ("size", "table", "expected"),
    [
        ("auto", GEMINI_ASPECT_RATIOS, None),
        (None, GEMINI_ASPECT_RATIOS, None),
        ("1024x1024", GEMINI_ASPECT_RATIOS, "1:1"),
        ("1024x1536", GEMINI_ASPECT_RATIOS, "2:3"),
        ("1536x1024", GEMINI_ASPECT_RATIOS, "3:2"),
        ("1792x1024", GEMINI_ASPECT_RATIOS, "16:9"),
        ("1024x1792", GEMINI_ASPECT_RATIOS, "9:16"),
        ("2560x1080", GEMINI_ASPECT_RATIOS, "21:9"),
        ("4:5", GEMINI_ASPECT_RATIOS, "4:5"),
        ("1024x1536", STABILITY_ASPECT_RATIOS, "2:3"),
        ("1080x2520", STABILITY_ASPECT_RATIOS, "9:21"),
        ("1024x768", FIVE_RATIOS, "4:3"),
        ("768x1024", FIVE_RATIOS, "3:4"),
        ("1920x1080", FIVE_RATIOS, "16:9"),
    ],
)
def test_aspect_ratio_table(
    size: str | None, table: tuple[str, ...], expected: str | None
) -> None:
    assert aspect_ratio(size, table, provider="p") == expected


@pytest.mark.parametrize(
    ("size", "table"),
    [
        ("1024x1536", FIVE_RATIOS),  # 2:3 is not in the list
        ("3000x1000", GEMINI_ASPECT_RATIOS),
        ("21:9", FIVE_RATIOS),
    ],
)
def test_unsupported_ratio_names_supported_values(
    size: str, table: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidRequest) as exc:
        aspect_ratio(size, table, provider="vertex")
    assert exc.value.param == "size"
    assert "provider 'vertex'" in exc.value.message
    assert "auto, " + ", ".join(table) in exc.value.message


@pytest.mark.parametrize(
    ("size", "tier"),
    [
        (None, None),
        ("auto", None),
        ("16:9", None),
        ("1024x1024", None),
        ("1024x1536", None),
        ("1536x1536", "2K"),
        ("2048x2048", "2K"),
        ("3840x2160", "4K"),
        ("4096x4096", "4K"),
    ],
)
def test_gemini_image_size(size: str | None, tier: str | None) -> None:
    assert gemini_image_size(size, provider="google") == tier


def test_gemini_image_size_too_large() -> None:
    with pytest.raises(InvalidRequest) as exc:
        gemini_image_size("8192x8192", provider="google")
    assert exc.value.param == "size"
    assert "4096x4096" in exc.value.message


def test_require_auto() -> None:
    require_auto(None, provider="s", why="edits keep the input size")
    require_auto("auto", provider="s", why="edits keep the input size")
    with pytest.raises(InvalidRequest) as exc:
        require_auto("1024x1024", provider="s", why="edits keep the input size")
    assert exc.value.param == "size"
    assert "edits keep the input size" in exc.value.message
