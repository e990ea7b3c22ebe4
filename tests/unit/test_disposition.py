"""The Content-Disposition fast path returns exactly what aiohttp's parser returns."""

from __future__ import annotations

import warnings

import pytest
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from proxy.disposition import _PLAIN, _kept, disposition_names
from proxy.errors import InvalidRequest

HEADERS = [
    # The plain shapes SDKs send: taken by the fast path.
    'form-data; name="image"; filename="cat.png"',
    'form-data; name="image[]"; filename="a b.png"',
    'form-data; name="prompt"',
    'Form-Data;  NAME = "model" ',
    'form-data; name=""',
    'form-data; name="extra_headers[X-Trace]"',
    'form-data; name="image"; filename="caf\u00e9 100%.png"',
    # Optional whitespace around the separators (RFC 9110 5.6.6).
    'form-data ; name="image" ; filename="x.png" ',
    'form-data;name="image";filename="x.png"',
    # Everything else: aiohttp's parser decides.
    "form-data; name=prompt",
    'form-data; name="a\\"b"; filename="x.png"',
    'form-data; name="image"; filename="/etc/passwd"',
    'form-data; name="image"; filename="a;b.png"',
    "form-data; name=\"image\"; filename*=UTF-8''%E2%82%AC.png",
    'form-data; name="image"; filename="x.png"; filename*=UTF-8\'\'y.png',
    'form-data; filename="x.png"; name="image"',
    'attachment; name="image"',
    'form-data; name="a"; name="b"',
    'form-data; name="a"; size=3',
    "form-data",
    "",
]


def _aiohttp(header: str) -> tuple[str | None, str | None]:
    _, params = parse_content_disposition(header)
    return (
        content_disposition_filename(params, "name"),
        content_disposition_filename(params, "filename"),
    )


@pytest.mark.parametrize("header", HEADERS)
def test_same_as_aiohttp(header: str) -> None:
    with warnings.catch_warnings():
        # aiohttp warns about the malformed ones; the answer is what matters here.
        warnings.simplefilter("ignore")
        expected = _aiohttp(header)
    assert disposition_names(header) == expected


def test_plain_headers_take_the_fast_path() -> None:
    assert _PLAIN.fullmatch(HEADERS[0]) is not None
    assert _PLAIN.fullmatch('form-data; name="image"; filename="/etc/passwd"') is None


def test_missing_header() -> None:
    assert disposition_names("") == (None, None)


@pytest.mark.parametrize("header", HEADERS)
def test_a_kept_answer_is_the_same_answer(header: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _aiohttp(header)
    assert disposition_names(header) == expected
    assert disposition_names(header) == expected  # from the cache the second time


def test_a_refused_header_is_refused_every_time() -> None:
    header = "form-data; name*=utf-7''%2BAGEAYgBj-"
    for _ in range(2):
        with pytest.raises(InvalidRequest):
            disposition_names(header)


def test_long_headers_are_not_kept() -> None:
    header = f'form-data; name="image"; filename="{"x" * 300}.png"'
    before = _kept.cache_info().currsize
    assert disposition_names(header) == ("image", "x" * 300 + ".png")
    assert _kept.cache_info().currsize == before
