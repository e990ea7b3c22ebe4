"""An OpenAI images reply too large to decode in one step of the event loop, made
small enough to: its long strings emptied, a slice of the reply per step.

msgspec validates a 256 MiB reply in one call (~90 ms of CPU, holding the GIL: a
thread does not help). ``slimmed`` finds the reply's strings the way JSON does
(outside a string a quote opens one; inside, a backslash escapes the next byte and a
quote closes it) with ``bytes.find`` over bounded windows, yielding to the loop every
``SLICE`` bytes, and empties each string over ``LONG`` bytes that has no escape (the
images' base64). msgspec then decodes the slim copy as it would the reply: the same
structure, ``data`` entries, ``usage``, the same errors for what is not JSON of that
shape; the reply's own bytes are what is answered. What the emptied strings held is
not checked for raw control characters, as on the relay path (``proxy.reply_scan``).
"""

from __future__ import annotations

import asyncio

LARGE = 4 * 1024 * 1024  # a reply up to this is decoded as it is
LONG = 64 * 1024
SLICE = 4 * 1024 * 1024
# Quotes and escapes looked at before giving up: an images reply has a few dozen, and
# a reply of millions of tiny strings is decoded whole as before (one msgspec call
# costs less than a Python step per string).
MAX_STOPS = 20_000


async def slimmed(body: bytes) -> bytes | None:
    """``body`` with its long unescaped strings emptied; None if there are none (or
    the reply ends inside a string, or has too many: decoded whole as before)."""
    n, pos, kept, mark, stops = len(body), 0, 0, 0, 0
    view = memoryview(body)
    out: list[bytes | memoryview] = []
    while pos < n:
        if pos - mark >= SLICE:
            await asyncio.sleep(0)
            mark = pos
        start = body.find(b'"', pos, pos + SLICE)
        if start < 0:
            pos += SLICE
            continue
        i, escaped = start + 1, False
        while True:  # the string's closing quote
            stops += 1
            if stops > MAX_STOPS:
                return None
            if i - mark >= SLICE or stops % 2048 == 0:
                await asyncio.sleep(0)
                mark = i
            window = min(n, i + SLICE)
            end = body.find(b'"', i, window)
            slash = body.find(b"\\", i, window if end < 0 else end)
            if slash >= 0:
                escaped, i = True, slash + 2
            elif end >= 0:
                break
            elif window == n:
                return None
            else:
                i = window
        if end - start - 1 > LONG and not escaped:
            out.append(view[kept : start + 1])
            kept = end
        pos = end + 1
    if not out:
        return None
    out.append(view[kept:])
    return b"".join(out)
