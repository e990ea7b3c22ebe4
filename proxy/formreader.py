"""The request body as a stream of chunks, and a streaming multipart/form-data reader.

``BodyStream`` bounds the whole intake with one timer: a read that waits longer than
the idle limit for the client's next bytes, or a body that falls behind its minimum
pace (``Pace``: after a grace period, bytes received over time spent waiting for them)
or past its deadline, ends the request with a 408. The idle limit alone would let a
client that sends a byte just before each timeout hold its request for ever. One timer
per request, re-armed only when it fires, replaces an ``asyncio.timeout`` per read
(about 7% of a small edit's CPU). Each chunk received is reserved from the gateway's
upload budget (``Pace.reserve``) as it arrives.

``FormReader`` splits ``multipart/form-data`` (RFC 7578 over RFC 2046) with
``bytes.find`` on the delimiter, handing each part's body out in the chunks it arrived
in: the part is never held whole. It replaces aiohttp's ``MultipartReader``, whose
line-by-line reads and per-part header parsing were about a fifth of a small edit's
CPU. Lines end in CRLF as the RFC and every HTTP client have it; nested multipart and
bodies that end before the closing delimiter are refused.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from proxy.disposition import disposition_names
from proxy.errors import InvalidRequest, PayloadTooLarge, RequestTimeout

# RFC 2046 5.1.1: 1 to 70 characters, the last not a space.
_BOUNDARY_PARAM = re.compile(
    r';[ \t]*boundary[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|([^;\s"]+))', re.IGNORECASE
)
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_CHARSET_PARAM = re.compile(
    r';[ \t]*charset[ \t]*=[ \t]*"?([A-Za-z0-9._:-]{1,40})"?', re.IGNORECASE
)
_ESCAPED = re.compile(r"\\(.)")
_MAX_HEAD = 16 * 1024  # one part's header block
_MAX_PADDING = 256  # RFC 2046 transport padding after a delimiter
# While the gateway, not the client, holds up the body, its timer looks again at most
# this often.
_RECHECK_S = 0.1


def malformed(reason: str) -> InvalidRequest:
    return InvalidRequest(f"malformed multipart body: {reason}")


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a multipart Content-Type, checked."""
    match = _BOUNDARY_PARAM.search(content_type)
    if match is None:
        raise malformed("the Content-Type has no boundary parameter")
    quoted, bare = match.groups()
    value = bare if quoted is None else _ESCAPED.sub(r"\1", quoted)
    if not _BCHARS.fullmatch(value):
        raise malformed("the boundary must be 1 to 70 characters of RFC 2046's set")
    return value.encode("ascii")


def too_large(what: str, cap: int, param: str | None = None) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is larger than the limit of {cap} bytes",
        param=param,
        code="payload_too_large",
    )


class ChunkSource(Protocol):
    """What is read from: aiohttp's ``request.content``."""

    async def readany(self) -> bytes: ...


class Reservation(Protocol):
    """Where a body's bytes are reserved (``proxy.backpressure.Slot``)."""

    def take(self, count: int) -> None:
        """Reserve ``count`` more bytes received; raises to refuse them."""


@dataclass(frozen=True, slots=True)
class Pace:
    """What the guard decided for one request's body: how slow it may come, and
    where its bytes are reserved (None: they are held in memory, not reserved)."""

    grace_s: float
    min_rate: int  # bytes per second of waiting, averaged once grace_s is spent
    deadline_s: float | None = None
    reserve: Reservation | None = None
    # Turns at reading the body (``proxy.backpressure.Pressure.readers``): taken
    # when a chunk arrives, kept while more wait in aiohttp's buffer, given back
    # before waiting for the client; waiting for one is the proxy's time.
    turn: asyncio.Semaphore | None = None


PACE = web.RequestKey("pace", Pace)


class BodyStream:
    """The request body's chunks as they arrive, capped at ``cap`` bytes in all.

    Used as ``async with BodyStream(request.content, timeout, cap, length) as body``
    (``length`` is the declared Content-Length, refused at once when over the cap). A
    read that waits over ``timeout`` seconds, or a body behind its ``pace``, cancels
    the task; leaving the block turns that into a 408.
    """

    def __init__(
        self,
        content: ChunkSource,
        timeout: float,
        cap: int,
        length: int | None = None,
        *,
        pace: Pace | None = None,
    ) -> None:
        if length is not None and length > cap:
            raise too_large("request body", cap)
        self._content = content
        self._timeout = timeout
        self._cap = cap
        self._pace = pace
        self._reserve = pace.reserve if pace is not None else None
        self._turn = pace.turn if pace is not None else None
        self._holding = False  # a turn is held
        self.total = 0
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._since: float | None = None  # when the pending read started
        self._waited = 0.0  # seconds spent in reads that are over
        self._start = 0.0
        self._fired: str | None = None  # why the timer cancelled the task

    async def __aenter__(self) -> BodyStream:
        self._task = asyncio.current_task()
        self._start = now = self._loop.time()
        self._arm(now + min(self._timeout, self._slack(0.0, now)))
        return self

    async def __aexit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._give_turn()
        if self._timer is not None:
            self._timer.cancel()
        if self._fired is not None and typ is asyncio.CancelledError:
            assert self._task is not None
            if self._task.uncancel() == 0:
                raise RequestTimeout(self._fired, code="request_timeout") from None

    def _arm(self, when: float) -> None:
        self._timer = self._loop.call_at(when, self._check)

    def _slack(self, waited: float, now: float) -> float:
        """Seconds of waiting left before the body is behind its pace or deadline."""
        pace = self._pace
        if pace is None:
            return math.inf
        slack = pace.grace_s + self.total / pace.min_rate - waited
        if pace.deadline_s is not None:
            slack = min(slack, self._start + pace.deadline_s - now)
        return slack

    def _late(self, now: float) -> str:
        pace = self._pace
        assert pace is not None
        if pace.deadline_s is not None and now - self._start >= pace.deadline_s:
            return f"the request body took longer than {pace.deadline_s:g} s"
        return (
            f"the request body came slower than the minimum of {pace.min_rate} bytes/s"
        )

    def _check(self) -> None:
        since = self._since
        now = self._loop.time()
        waited = self._waited + (now - since if since is not None else 0.0)
        slack = self._slack(waited, now)
        if since is not None and now - since >= self._timeout:
            self._fire(f"the request body stalled for over {self._timeout:g} s")
        elif slack <= 0:
            self._fire(self._late(now))
        elif since is None:
            # No read pending: the proxy is busy, not the client, and the client's
            # clock stands still (a deadline does not).
            self._arm(now + max(min(self._timeout, slack), _RECHECK_S))
        else:
            self._arm(min(since + self._timeout, now + slack))

    def _fire(self, reason: str) -> None:
        if self._task is not None:
            self._fired = reason
            self._task.cancel()

    def _give_turn(self) -> None:
        if self._holding:
            assert self._turn is not None
            self._holding = False
            self._turn.release()

    async def read(self) -> bytes:
        """The next chunk of the body; ``b""`` at its end."""
        if self._holding and not _buffered(self._content):
            # The next read waits for the client: the turn is another body's.
            self._give_turn()
        self._since = since = self._loop.time()
        try:
            chunk = await self._content.readany()
        except RequestPayloadError as exc:
            # aiohttp could not decode the body (a Content-Encoding that is not what
            # it says): the client's fault.
            cause = exc.__cause__
            reason = (
                cause.message if isinstance(cause, HttpProcessingError) else str(exc)
            )
            raise InvalidRequest(f"the request body cannot be read: {reason}") from None
        finally:
            self._since = None
            self._waited += self._loop.time() - since
        if chunk and self._turn is not None and not self._holding:
            # Beyond the turns, the chunk waits here; its socket, once aiohttp's
            # buffer is full, stays paused and costs the loop nothing meanwhile.
            await self._turn.acquire()
            self._holding = True
        self.total += len(chunk)
        if self.total > self._cap:
            raise too_large("request body", self._cap)
        if self._reserve is not None and chunk:
            self._reserve.take(len(chunk))
        return chunk


def _buffered(content: ChunkSource) -> bool:
    """Whether a read would return at once: bytes wait in aiohttp's buffer (its
    StreamReader's ``_buffer``; a source without one counts as empty)."""
    return bool(getattr(content, "_buffer", None))


def request_body(request: web.Request, timeout: float, cap: int) -> BodyStream:
    """``request``'s body as a ``BodyStream`` at the pace the guard set (``PACE``); a
    declared length over ``cap`` is refused at once."""
    pace = request.get(PACE)
    return BodyStream(request.content, timeout, cap, request.content_length, pace=pace)


class Part:
    """One part's headers, as far as a form needs them."""

    __slots__ = ("charset", "filename", "name", "nested")

    def __init__(self, block: bytes) -> None:
        disposition = ""
        content_type = ""
        for line in block.split(b"\r\n") if block else ():
            key, sep, value = line.partition(b":")
            if not sep or not key or key != key.strip():
                raise malformed(f"invalid part header line {line[:60]!r}")
            key = key.lower()
            if key == b"content-disposition" and not disposition:
                disposition = value.decode("utf-8", "replace").strip()
            elif key == b"content-type" and not content_type:
                content_type = value.decode("latin-1").strip()
        self.name, self.filename = disposition_names(disposition)
        self.nested = content_type[:10].lower() == "multipart/"
        match = _CHARSET_PARAM.search(content_type)
        self.charset = match.group(1) if match else None


class FormReader:
    """``next()`` gives each part's headers, ``read()`` its body chunk by chunk.

    Body chunks are views into the chunks the socket delivered, not copies: a large
    part is copied once, by whoever keeps it.
    """

    def __init__(self, body: BodyStream, boundary: bytes) -> None:
        self._body = body
        self._delim = b"\r\n--" + boundary
        # A CRLF in front so the first delimiter (at the very start) is found like the
        # others; anything before it is preamble and discarded.
        self._data = b"\r\n"
        self._pos = 0  # where the unparsed bytes of _data begin
        self._in_part = False
        self._done = False

    async def _next_chunk(self) -> bytes:
        chunk = await self._body.read()
        if not chunk:
            raise malformed("the body ends before the closing boundary")
        return chunk

    async def _more(self) -> None:
        """Join the next chunk to what is left (used where little is left)."""
        chunk = await self._next_chunk()
        self._data = self._data[self._pos :] + chunk
        self._pos = 0

    async def next(self) -> Part | None:
        """The next part's headers (the rest of the current part is skipped)."""
        while self._in_part:
            await self.read()
        if self._done:
            return None
        delim = self._delim
        while (at := self._data.find(delim, self._pos)) < 0:
            # Preamble (or a part skipped): keep only what may start a delimiter.
            left = self._data[max(self._pos, len(self._data) - len(delim) + 1) :]
            chunk = await self._next_chunk()
            self._pos = 0
            if len(chunk) < len(delim):
                self._data = left + chunk
                continue
            # A delimiter split between them is found in their joined ends; the chunk
            # itself is not joined to what was left (that copied it, often an image).
            self._data = chunk
            at = (left + chunk[: len(delim)]).find(delim)
            if 0 <= at < len(left):
                at -= len(left)  # it starts before the chunk
                break
        self._pos = at + len(delim)
        while len(self._data) - self._pos < 2:
            await self._more()
        if self._data.startswith(b"--", self._pos):
            self._done = True
            return None
        while (eol := self._data.find(b"\r\n", self._pos)) < 0:
            rest = len(self._data) - self._pos
            if rest > _MAX_PADDING or self._data.find(b"\n", self._pos) >= 0:
                raise malformed("a boundary line does not end in CRLF")
            await self._more()
        if self._data[self._pos : eol].strip(b" \t"):
            raise malformed("unexpected bytes after a boundary")
        # The header block runs from this CRLF to the blank line (it may be empty).
        self._pos = eol
        limit = eol + _MAX_HEAD
        while (end := self._data.find(b"\r\n\r\n", self._pos, limit)) < 0:
            if len(self._data) >= limit:
                raise malformed(f"a part's headers are over {_MAX_HEAD} bytes")
            await self._more()
            limit = _MAX_HEAD
        part = Part(self._data[self._pos + 2 : end])
        self._pos = end + 4
        self._in_part = True
        return part

    async def read(self) -> memoryview:
        """The next chunk of the current part's body; empty at its end."""
        if not self._in_part:
            return memoryview(b"")
        delim = self._delim
        size = len(delim)
        while True:
            data, pos = self._data, self._pos
            at = data.find(delim, pos)
            if at >= 0:
                self._in_part = False
                self._pos = at
                return memoryview(data)[pos:at]
            # Everything but a tail that may be the start of a split delimiter.
            safe = len(data) - size + 1
            if safe > pos:
                self._pos = safe
                return memoryview(data)[pos:safe]
            chunk = await self._next_chunk()
            tail = data[pos:]
            # Does a delimiter start in the tail and run on into the chunk?
            probe = tail + chunk[:size]
            if len(chunk) >= size and not 0 <= probe.find(delim) < len(tail):
                self._data, self._pos = chunk, 0
                if tail:
                    return memoryview(tail)
            else:
                self._data, self._pos = tail + chunk, 0
