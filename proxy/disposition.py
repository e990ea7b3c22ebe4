"""A form-data part's ``name`` and ``filename`` from its Content-Disposition, fast.

aiohttp's ``parse_content_disposition`` rebuilds an escaped 128-character class with
``re.escape`` on every call: that was ~15% of the proxy's CPU on a small multipart edit
(bench/README.md). The plain form every SDK sends, ``form-data; name="x"[;
filename="y"]`` with no quotes, backslashes, slashes or semicolons in the values, is
matched here by one regex; any other header goes to aiohttp's full RFC 6266/5987 parser
(``filename*``, escapes, tokens), so results are the same.
"""

from __future__ import annotations

import re
import warnings

from aiohttp.multipart import content_disposition_filename, parse_content_disposition

_PLAIN = re.compile(
    r'[ \t]*form-data[ \t]*;[ \t]*name[ \t]*=[ \t]*"([^"\\/;]*)"'
    r'(?:[ \t]*;[ \t]*filename[ \t]*=[ \t]*"([^"\\/;]*)")?[ \t]*',
    re.IGNORECASE,
)


def disposition_names(header: str) -> tuple[str | None, str | None]:
    """``(name, filename)`` of a form-data part's Content-Disposition header."""
    match = _PLAIN.fullmatch(header)
    if match is not None:
        return match.group(1), match.group(2)
    if not header:
        return None, None
    with warnings.catch_warnings():
        # aiohttp warns about a header it cannot parse and returns no parameters:
        # the part then has no name, which the caller refuses with a 400.
        warnings.simplefilter("ignore")
        _, params = parse_content_disposition(header)
    name = content_disposition_filename(params, "name")
    return name, content_disposition_filename(params, "filename")
