"""A form-data part's ``name`` and ``filename`` from its Content-Disposition, fast.

aiohttp's ``parse_content_disposition`` rebuilds an escaped 128-character class with
``re.escape`` on every call: that was ~15% of the proxy's CPU on a small multipart edit
(bench/README.md). The plain form every SDK sends, ``form-data; name="x"[;
filename="y"]`` with no quotes, backslashes, slashes or semicolons in the values, is
matched here by one regex; any other header goes to aiohttp's full RFC 6266/5987 parser
(``filename*``, escapes, tokens), so results are the same.
"""

from __future__ import annotations

import functools
import re
import warnings

from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from proxy.charsets import is_text, text_codec
from proxy.errors import InvalidRequest

_PLAIN = re.compile(
    r'[ \t]*form-data[ \t]*;[ \t]*name[ \t]*=[ \t]*"([^"\\/;]*)"'
    r'(?:[ \t]*;[ \t]*filename[ \t]*=[ \t]*"([^"\\/;]*)")?[ \t]*',
    re.IGNORECASE,
)
# The charset of an RFC 5987/2231 extended value: `name*=charset'lang'...` (or `*0*=`).
_EXT_CHARSET = re.compile(
    r"([A-Za-z]+)\*(?:[0-9]+\*)?[ \t]*=[ \t]*\"?([^'\";\s]*)'", re.IGNORECASE
)


# Headers up to this long are remembered: SDKs send the same few for every request
# (the regex costs more than the whole rest of a part's header parsing). Bounded:
# at most _KEPT of them, so about 128 KiB whatever clients send.
_CACHED_CHARS = 256
_KEPT = 512


def disposition_names(header: str) -> tuple[str | None, str | None]:
    """``(name, filename)`` of a form-data part's Content-Disposition header."""
    if len(header) <= _CACHED_CHARS:
        return _kept(header)
    return _names(header)


def _names(header: str) -> tuple[str | None, str | None]:
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
    filename = content_disposition_filename(params, "filename")
    # RFC 5987 values were decoded with whatever codec the client named: refuse any
    # that is not a text charset, and any value that is not text (a lone surrogate).
    bad = {
        key.lower()
        for key, charset in _EXT_CHARSET.findall(header)
        if charset and text_codec(charset) is None
    }
    if name is not None and ("name" in bad or not is_text(name)):
        raise InvalidRequest("a part's name is not valid text", param="name")
    if filename is not None and ("filename" in bad or not is_text(filename)):
        raise InvalidRequest(
            f"the filename of part '{name}' is not valid text", param=name or "name"
        )
    return name, filename


# A refused header raises, and is not kept.
_kept = functools.lru_cache(maxsize=_KEPT)(_names)
