"""A multipart part's ``name`` and ``filename`` from its Content-Disposition, fast.

aiohttp's ``parse_content_disposition`` rebuilds an escaped 128-character class with
``re.escape`` on every call, and ``BodyPartReader.name``/``.filename`` each call it:
that was ~15% of the proxy's CPU on a small multipart edit (bench/README.md). The plain
form every SDK sends, ``form-data; name="x"[; filename="y"]`` with no quotes,
backslashes, slashes or semicolons in the values, is matched here by one regex; any
other header falls back to aiohttp's full RFC 6266/5987 parser, so results are identical.
"""

from __future__ import annotations

import re

from aiohttp import BodyPartReader, hdrs

_PLAIN = re.compile(
    r'[ \t]*form-data[ \t]*;[ \t]*name[ \t]*=[ \t]*"([^"\\/;]*)"'
    r'(?:[ \t]*;[ \t]*filename[ \t]*=[ \t]*"([^"\\/;]*)")?[ \t]*',
    re.IGNORECASE,
)


def part_names(part: BodyPartReader) -> tuple[str | None, str | None]:
    """``(name, filename)`` of a form-data part, as aiohttp would return them."""
    match = _PLAIN.fullmatch(part.headers.get(hdrs.CONTENT_DISPOSITION, ""))
    if match is None:
        return part.name, part.filename
    return match.group(1), match.group(2)
