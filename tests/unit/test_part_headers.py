"""A part's header block parsed once and remembered (``formreader._kept_headers``):
the same answer each time, a malformed block refused each time, long blocks and the
number kept bounded."""

from __future__ import annotations

import pytest

from proxy import formreader
from proxy.errors import InvalidRequest
from proxy.formreader import Part

_FILE = (
    b'Content-Disposition: form-data; name="image"; filename="cat.png"\r\n'
    b"Content-Type: image/png"
)


def test_a_block_seen_again_gives_the_same_part() -> None:
    for _ in range(3):
        part = Part(_FILE)
        assert (part.name, part.filename, part.nested, part.charset) == (
            "image", "cat.png", False, None,
        )  # fmt: skip
    text = Part(b'Content-Disposition: form-data; name="prompt"\r\n'
                b"Content-Type: text/plain; charset=ISO-8859-1")  # fmt: skip
    assert (text.name, text.filename, text.charset) == ("prompt", None, "ISO-8859-1")


def test_a_malformed_block_is_refused_every_time() -> None:
    for _ in range(3):
        with pytest.raises(InvalidRequest):
            Part(b'Content-Disposition : form-data; name="x"')


def test_what_is_kept_is_bounded() -> None:
    formreader._kept_headers.cache_clear()
    for i in range(formreader._KEPT_BLOCKS + 50):
        Part(b'Content-Disposition: form-data; name="f%d"' % i)
    assert formreader._kept_headers.cache_info().currsize == formreader._KEPT_BLOCKS
    long = b'Content-Disposition: form-data; name="' + b"n" * 300 + b'"'
    assert Part(long).name == "n" * 300
    assert formreader._kept_headers.cache_info().currsize == formreader._KEPT_BLOCKS
