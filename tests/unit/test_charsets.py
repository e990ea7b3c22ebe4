"""Client charset labels: real text encodings by their aliases, nothing else."""

from __future__ import annotations

import pytest

from proxy.charsets import is_text, text_codec


@pytest.mark.parametrize(
    ("label", "codec"),
    [("UTF-8", "utf-8"), ("utf_8", "utf-8"), (" utf8 ", "utf-8"),
     ("US-ASCII", "ascii"), ("ascii", "ascii"), ("ISO-8859-1", "latin-1"),
     ("latin1", "latin-1"), ("ISO_8859-1:1987", "latin-1"), ("l1", "latin-1")],
)  # fmt: skip
def test_text_charsets_and_aliases(label: str, codec: str) -> None:
    assert text_codec(label) == codec


@pytest.mark.parametrize(
    "label",
    ["unicode_escape", "raw_unicode_escape", "utf-7", "rot13", "rot_13", "hex",
     "base64", "utf-16", "utf-32", "idna", "punycode", "zlib", "cp1252", "", "."],
)  # fmt: skip
def test_transforms_and_other_codecs_are_not_text_charsets(label: str) -> None:
    assert text_codec(label) is None


def test_is_text() -> None:
    assert is_text("plain")
    assert is_text("caf\xe9 \U0001f600")
    assert not is_text("a \ud800 b")
    assert not is_text("\udcff")
