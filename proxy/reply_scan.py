"""An OpenAI ``ImagesResponse`` read as it arrives, without holding it (sans-IO).

``ReplyScanner.feed`` takes the provider's reply in the pieces it arrives in and gives
back what may be sent on at once: the same JSON object, member by member, less its
closing brace (the relay adds ``provider`` and ``cost`` there, once the reply's
``usage`` is known). It finds the structure only: a regular expression skips from one
quote, bracket or comma to the next, so the megabytes of base64 inside a string are
passed over at C speed, never decoded or copied but once into the output.

Held: the name of the member being read (at most ``MAX_KEY`` bytes) and the values of
``usage`` (kept for pricing and sent on), ``provider`` and ``cost`` (an upstream
gateway's, dropped so that ours are not duplicates), each at most ``MAX_HELD`` bytes.
Counted: the entries of ``data`` (the images, as priced). What is not JSON of that
shape is a ``ValueError`` (the relay's 502, or a cut connection once bytes were sent).
"""

from __future__ import annotations

import re

import msgspec

from proxy.models import Usage

MAX_KEY = 256
MAX_HELD = 64 * 1024
# Outside strings: what changes the structure.
_TOKEN = re.compile(rb'[{}\[\]",:]')
_SPACE = b" \t\r\n"
_HELD_KEYS = frozenset({b"usage", b"provider", b"cost"})
_DROPPED = frozenset({b"provider", b"cost"})
_usage = msgspec.json.Decoder(Usage | None)

# Where the scanner is in the top-level object.
_BEFORE, _KEY, _IN_KEY, _COLON, _VALUE, _AFTER = range(6)


class ReplyScanner:
    def __init__(self) -> None:
        self.images = 0  # entries of `data`
        self.usage: Usage | None = None
        self._phase = _BEFORE
        self._depth = 0  # 1: inside the top-level object
        self._in_string = False
        self._escaped = False  # a backslash ended the last piece, inside a string
        self._key = bytearray()
        self._held: bytearray | None = None  # the value of a held member
        self._members = 0  # members sent on
        self._data = False  # the member being read is `data`
        self._seen_data = False

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes | memoryview] = []
        view = memoryview(chunk)
        i, n = 0, len(chunk)
        value_from = 0  # where this piece's part of the current value starts
        while i < n:
            if self._in_string:
                if self._escaped:
                    if self._phase == _IN_KEY:
                        self._add_key(view[i : i + 1])
                    self._escaped, i = False, i + 1
                    continue
                # Two memchr passes: a regex character class is ten times slower
                # over megabytes of base64.
                j = chunk.find(b'"', i)
                slash = chunk.find(b"\\", i, n if j < 0 else j)
                if slash >= 0:
                    j = slash
                elif j < 0:
                    if self._phase == _IN_KEY:
                        self._add_key(view[i:])
                    i = n
                    break
                if j == slash:  # a backslash: skip what it escapes
                    if self._phase == _IN_KEY:
                        self._add_key(view[i : j + 2])
                    self._escaped = j + 1 == n
                    i = j + 2
                    continue
                self._in_string = False
                if self._phase == _IN_KEY:
                    self._add_key(view[i:j])
                    self._phase = _COLON
                elif self._data and self._depth == 2:
                    self.images += 1  # a string entry
                i = j + 1
                continue
            phase = self._phase
            if phase != _VALUE:
                i = self._between(chunk, i, n, out)
                value_from = i
                continue
            m = _TOKEN.search(chunk, i)
            if m is None:
                break
            j, c = m.start(), chunk[m.start()]
            i = j + 1
            if c == 0x22:  # "
                self._in_string = True
            elif c in b"{[":
                self._depth += 1
                if self._data and self._depth == 3:
                    self.images += 1
            elif c in b"}]":
                self._depth -= 1
                if self._depth == 0:  # the top-level object's end
                    self._value(view[value_from:j], out)
                    self._end_member(out)
                    self._phase = _AFTER
            elif c == 0x2C and self._depth == 1:  # a comma between members
                self._value(view[value_from:j], out)
                self._end_member(out)
                self._phase = _KEY
                value_from = i
        if self._phase == _VALUE:
            self._value(view[value_from:n], out)
        if len(out) == 1 and len(out[0]) == n:
            return chunk  # the middle of a value: passed on as it came
        return b"".join(out)

    def _between(
        self, chunk: bytes, i: int, n: int, out: list[bytes | memoryview]
    ) -> int:
        """One byte outside any value: the object's braces, a key's quote, a colon."""
        c = chunk[i]
        if c in _SPACE:
            return i + 1
        phase = self._phase
        if phase == _BEFORE and c == 0x7B:  # {
            self._phase, self._depth = _KEY, 1
            out.append(b"{")
        elif phase == _KEY and c == 0x22:
            self._phase, self._in_string = _IN_KEY, True
            self._key.clear()
        elif phase == _KEY and c == 0x7D and self._members == 0:  # {}
            self._phase, self._depth = _AFTER, 0
        elif phase == _COLON and c == 0x3A:  # :
            self._start_value(out)
        else:
            raise ValueError(f"unexpected {chr(c)!r} in the reply")
        return i + 1

    def _add_key(self, part: memoryview) -> None:
        self._key += part
        if len(self._key) > MAX_KEY:
            raise ValueError("a member name over 256 bytes")

    def _start_value(self, out: list[bytes | memoryview]) -> None:
        key = bytes(self._key)
        self._phase = _VALUE
        self._data = key == b"data"
        self._seen_data = self._seen_data or self._data
        if key in _HELD_KEYS:
            self._held = bytearray()
            return
        self._head(out)

    def _head(self, out: list[bytes | memoryview]) -> None:
        out.append(b'%s"%s":' % (b"," if self._members else b"", self._key))
        self._members += 1

    def _value(self, part: memoryview, out: list[bytes | memoryview]) -> None:
        if self._held is None:
            if part:
                out.append(part)
            return
        self._held += part
        if len(self._held) > MAX_HELD:
            raise ValueError(f"member '{self._key.decode()}' over {MAX_HELD} bytes")

    def _end_member(self, out: list[bytes | memoryview]) -> None:
        held, self._held = self._held, None
        self._data = False
        if held is None:
            return
        key = bytes(self._key)
        if key in _DROPPED:
            return
        try:
            self.usage = _usage.decode(held)
        except msgspec.DecodeError as exc:
            raise ValueError("a usage that is not OpenAI's") from exc
        self._head(out)
        out.append(bytes(held))

    def close(self) -> None:
        """The reply ended: a ``ValueError`` unless it was a whole object with
        ``data``."""
        if self._phase != _AFTER or self._in_string:
            raise ValueError("the reply ended before its object did")
        if not self._seen_data:
            raise ValueError("a reply without data")

    @property
    def members(self) -> int:
        return self._members
