"""Server-sent events as bytes: decoding a provider's stream, encoding ours, and the
completed events that stand for a whole (non-streamed) images result.

Pure functions and a small incremental decoder; no I/O, so adapters may use them too.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Event(NamedTuple):
    name: str | None
    data: bytes
    raw: bytes  # the block as received, without its terminating blank line


class SSEDecoder:
    """Splits a byte stream into events (any of LF, CRLF, CR ends a line)."""

    def __init__(self, max_event_bytes: int) -> None:
        self._buf = bytearray()
        self._scanned = 0  # where the search for a blank line resumes
        self._cr = False  # the last chunk ended in CR; the next may start with LF
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[Event]:
        if self._cr:
            data = b"\r" + data
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self._buf += data
        events: list[Event] = []
        start = 0
        while (end := _blank_line(self._buf, max(start, self._scanned))) != -1:
            if end - start > self._max:
                raise ValueError(f"an event is larger than {self._max} bytes")
            with memoryview(self._buf) as view:  # one copy, not a bytearray's two
                block = bytes(view[start:end])
            if block.strip(b"\n"):
                events.append(parse_event(block))
            start = end + 2
            self._scanned = start
        del self._buf[:start]
        self._scanned = max(len(self._buf) - 1, 0)
        if len(self._buf) > self._max:
            raise ValueError(f"an event is larger than {self._max} bytes")
        return events


def _blank_line(buf: bytearray, at: int) -> int:
    # buf.find(b"\n\n", at) by way of memchr: a two-byte find scans each byte.
    end = len(buf) - 1
    while 0 <= (nl := buf.find(b"\n", at)) < end:
        if buf[nl + 1] == 10:
            return nl
        at = nl + 1
    return -1


def _lines(block: bytes) -> list[bytes]:
    # block.split(b"\n"), found with find() (memchr): split() steps through every
    # byte of a partial image's base64 in Python's own loop.
    lines, at = [], 0
    while (nl := block.find(b"\n", at)) >= 0:
        lines.append(block[at:nl])
        at = nl + 1
    lines.append(block[at:])
    return lines


def parse_event(block: bytes) -> Event:
    name: str | None = None
    data: list[bytes] = []
    raw = block.strip(b"\n")
    # Line by line by offsets: each field's value is the one copy made of it (split,
    # partition and removeprefix copied a partial image's base64 three times).
    at, end = 0, len(raw)
    while True:
        nl = raw.find(b"\n", at)
        stop = end if nl < 0 else nl
        if not raw.startswith(b":", at, stop):  # a comment line is skipped
            colon = raw.find(b":", at, stop)
            field = raw[at:stop] if colon < 0 else raw[at:colon]
            value = stop if colon < 0 else colon + 1
            if raw.startswith(
                b" ", value, stop
            ):  # one space after the colon is not data
                value += 1
            if field == b"event":
                name = raw[value:stop].decode("utf-8", "replace")
            elif field == b"data":
                data.append(raw[value:stop])
        if nl < 0:
            return Event(name, b"\n".join(data), raw)
        at = nl + 1


def encode_event(name: str | None, data: bytes) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"".join(b"data: " + line + b"\n" for line in _lines(data)) + b"\n"


def result_events(body: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """One ``<prefix>.completed`` event per image of an images result.

    The result's usage covers the whole request, so it goes on the last event only.
    """
    shared = {
        k: body[k]
        for k in ("size", "quality", "background", "output_format")
        if k in body
    }
    items: list[dict[str, Any]] = body.get("data") or []
    events = [
        {"type": f"{prefix}.completed", **item, "created_at": body.get("created"),
         **shared}
        for item in items
    ]  # fmt: skip
    if events and body.get("usage") is not None:
        events[-1]["usage"] = body["usage"]
    return events
