"""Which character sets a client may name for its text, and whether text is sendable.

A multipart part's ``charset=``, a form's ``_charset_`` field and RFC 5987's
``filename*=charset''...`` all hand a codec name to Python. Python's codec registry
also holds transforms that are not text encodings (``unicode_escape``, ``rot13``,
``hex``, ``utf-7``): through them a client can write any code point, lone surrogates
included, which no encoder downstream accepts. Only UTF-8, US-ASCII and Latin-1 (the
charsets RFC 7578 and browsers use for form data) are allowed, by their IANA names and
aliases; the registry is never asked.
"""

from __future__ import annotations

import re

_TEXT_CHARSETS = {
    "utf8": "utf-8",
    "ascii": "ascii",
    "usascii": "ascii",
    "us": "ascii",
    "iso646us": "ascii",
    "ansix3.41968": "ascii",
    "latin1": "latin-1",
    "l1": "latin-1",
    "iso88591": "latin-1",
    "iso885911987": "latin-1",
    "isoir100": "latin-1",
    "cp819": "latin-1",
    "ibm819": "latin-1",
    "csisolatin1": "latin-1",
}
_SEPARATORS = re.compile(r"[-_ :]")


def text_codec(label: str) -> str | None:
    """The Python codec for a client's charset label; None unless it is one of ours."""
    key = _SEPARATORS.sub("", label.strip().lower())
    return _TEXT_CHARSETS.get(key)


def is_text(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8 (it holds no lone surrogate)."""
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
