"""The request body as a stream of chunks, read at a pace and in turns.

``BodyStream`` bounds the whole intake with one timer: a read that waits longer than
the idle limit for the client's next bytes, or a body that falls behind its minimum
pace (``Pace``: after a grace period, bytes received over time spent waiting for them)
or past its deadline, ends the request with a 408. The idle limit alone would let a
client that sends a byte just before each timeout hold its request for ever. One timer
per request, re-armed only when it fires, replaces an ``asyncio.timeout`` per read
(about 7% of a small edit's CPU). Each chunk received is reserved from the gateway's
upload budget (``Pace.reserve``) as it arrives.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import Protocol

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from proxy.errors import InvalidRequest, PayloadTooLarge, RequestTimeout
from proxy.listener import release

# While the gateway, not the client, holds up the body, its timer looks again at most
# this often.
_RECHECK_S = 0.1


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


# A Struct: made per request, and msgspec's __init__ is C (a frozen dataclass sets
# each field through object.__setattr__).
class Pace(msgspec.Struct, frozen=True):
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

    def give_turn(self) -> None:
        """Give the read turn back while the body waits for something else (the
        provider taking a forwarded upload): the next chunk takes one again."""
        self._give_turn()

    def _give_turn(self) -> None:
        if self._holding:
            assert self._turn is not None
            self._holding = False
            self._turn.release()

    def buffered(self) -> bool:
        """Whether bytes wait in aiohttp's buffer (a read would not wait for them)."""
        return _buffered(self._content)

    async def read(self) -> bytes:
        """The next chunk of the body; ``b""`` at its end."""
        turn = self._turn
        if turn is not None:
            if self._holding:
                if not _buffered(self._content):
                    # The next read waits for the client: the turn is another body's.
                    self._give_turn()
            elif _buffered(self._content):
                # Bytes wait in aiohttp's buffer: the turn first, then the bytes.
                # Taken the other way round, the socket read on while the chunk
                # waited, and a burst of 1,000 uploads held every body whole.
                await turn.acquire()
                self._holding = True
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
    release(request.transport)  # only the head was read so far (proxy.listener)
    return BodyStream(request.content, timeout, cap, request.content_length, pace=pace)
