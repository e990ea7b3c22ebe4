"""A provider's reply as ``proxy.upstream`` hands it to adapters, read with a cap, and
the one map from aiohttp client exceptions to the proxy's ``UpstreamError`` tree.

Nothing else catches aiohttp client exceptions on the way to a provider: ``Upstream``
calls ``mapped``/``map_errors`` for every send, stream and download.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import aiohttp
import msgspec
from aiohttp import hdrs
from multidict import CIMultiDictProxy
from prometheus_client import Counter

from proxy.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.freeing import joined_freeing
from proxy.turns import StartGate


class UpstreamResponse(msgspec.Struct, frozen=True):
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class UpstreamStream:
    """A reply whose body is read as it arrives; read errors map like any other."""

    def __init__(
        self,
        provider: str,
        resp: aiohttp.ClientResponse,
        cap: int,
        received: Counter,
        *,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self._provider = provider
        self._resp = resp
        self._cap = cap
        self._received = received
        self._finished = False
        self._failed = False
        self._on_close = on_close
        self._outcome: str | None = None
        self._head: list[bytes] = []  # read by ``head``, not yet handed out

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def settle(self, outcome: str) -> None:
        """Record the call as ``outcome`` when it is closed (a relay that gave up on
        the reply: ``2xx`` for a body it refused, ``error`` for one too large)."""
        self._outcome = outcome

    @property
    def outcome(self) -> str:
        if self._outcome is not None:
            return self._outcome
        if self._failed:
            return "error"
        if self.ok and not self._finished:
            return "aborted"  # the client left before the reply ended
        return f"{self.status // 100}xx"

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def cap(self) -> int:
        return self._cap

    @property
    def length(self) -> int | None:
        """The Content-Length the reply announced, if any."""
        return self._resp.content_length

    async def close(self) -> None:
        """Release the connection (to the pool if the reply was read to its end, else
        closed) and record the call's outcome; for a reply ``Upstream.open`` handed
        out."""
        if self._finished:
            self._resp.release()
        else:
            self._resp.close()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self.outcome)

    async def read(self) -> UpstreamResponse:
        """The whole (capped) body, e.g. of an error reply."""
        async with self._errors():
            body = await read_capped(self._resp, self._cap, self._provider)
        self._finished = True
        return UpstreamResponse(self.status, self.headers, body)

    async def head(self, held: int) -> UpstreamResponse | None:
        """Read up to ``held`` bytes (kept for ``chunks``); the whole reply if it
        ended within them (over the cap: a 502, as ``read_capped``), else None."""
        size = 0
        async with self._errors():
            while size <= held:
                chunk, _ = await self._resp.content.readchunk()
                if not chunk:
                    self._finished = True
                    body = b"".join(self._head)
                    self._head.clear()
                    return UpstreamResponse(self.status, self.headers, body)
                self._received.inc(len(chunk))
                self._head.append(chunk)
                size += len(chunk)
                if size > self._cap:
                    raise _too_large(self._provider, self._cap)
        return None

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body in the pieces it arrives in: each as the connection read it, not
        joined with what else is buffered (no copy, and at most one read's size)."""
        while self._head:
            yield self._head.pop(0)
        async with self._errors():
            async for chunk, _ in self._resp.content.iter_chunks():
                self._received.inc(len(chunk))
                yield chunk
        self._finished = True

    async def wait_turn(self, turns: StartGate) -> None:
        """Wait for one of ``turns`` with the connection paused: the piece in hand is
        the only one held meanwhile (not one more read into aiohttp's buffer), and
        the read timeout stops (the wait is the proxy's, not the provider's)."""
        connection = self._resp.connection
        protocol = None if connection is None else connection.protocol
        if protocol is None or getattr(protocol, "_reading_paused", True):
            await turns.wait()  # ended, or already paused by its full buffer
            return
        protocol.pause_reading()
        try:
            await turns.wait()
        finally:
            if protocol.connected:
                protocol.resume_reading()

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            async with map_errors(self._provider):
                yield
        except UpstreamError:
            self._failed = True
            raise


HELD_KWARG = "_held"  # in a send's kwargs: a 2xx reply past this many bytes is relayed


def read_whole(resp: aiohttp.ClientResponse, held: int) -> bool:
    """A reply that says it is at most ``held`` bytes (identity-encoded): read whole."""
    length = resp.content_length
    return (
        length is not None
        and length <= held
        and resp.headers.get(hdrs.CONTENT_ENCODING, "identity") == "identity"
    )


def _too_large(provider: str, cap: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"provider '{provider}' sent a reply over {cap} bytes",
        provider=provider,
        code="upstream_reply_too_large",
    )


# A reply past this is joined from its pieces in a worker thread: bytes.join copies
# without the GIL, and one copy of a 256 MiB reply held the event loop for ~100 ms
# (``bench/stall.py``, reply256kept). aiohttp's ``read`` joins on the loop.
JOIN_OFF_LOOP = 4 * 1024 * 1024


async def read_capped(resp: aiohttp.ClientResponse, cap: int, provider: str) -> bytes:
    length = resp.content_length
    if length is not None:
        if length > cap:
            raise _too_large(provider, cap)
        # Content-Length counts the wire bytes: a compressed reply can inflate far
        # past it, so only an identity body is read whole.
        identity = resp.headers.get(hdrs.CONTENT_ENCODING, "identity") == "identity"
        if identity and length <= JOIN_OFF_LOOP:
            return await resp.read()
    # The pieces as the connection read them: a bytearray grown by += copied the
    # whole body at each reallocation, and bytes() copied it again.
    pieces: list[bytes] = []
    size = 0
    async for piece, _ in resp.content.iter_chunks():
        pieces.append(piece)
        size += len(piece)
        if size > cap:
            raise _too_large(provider, cap)
    if size > JOIN_OFF_LOOP:
        return await asyncio.to_thread(joined_freeing, pieces)
    return b"".join(pieces)


@contextlib.asynccontextmanager
async def map_errors(provider: str) -> AsyncIterator[None]:
    try:
        yield
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise mapped(provider, exc) from exc


def mapped(provider: str, exc: TimeoutError | aiohttp.ClientError) -> UpstreamError:
    """The proxy's error for an aiohttp client error (first match in the map)."""
    for exc_type, cls, what, code, unsent in _ERROR_MAP:
        if isinstance(exc, exc_type):
            detail = f" ({type(exc).__name__})" if cls is UpstreamUnavailable else ""
            err = cls(
                f"provider '{provider}' {what}{detail}", provider=provider, code=code
            )
            err.unsent = unsent
            return err
    raise AssertionError(exc)  # pragma: no cover - the map ends with base classes


# aiohttp client exceptions → the proxy's errors, most specific first. `unsent`: the
# request cannot have reached the provider, so retrying it cannot bill twice.
_ERROR_MAP: tuple[tuple[type[BaseException], type[UpstreamError], str, str, bool], ...] = (
    (aiohttp.ConnectionTimeoutError, UpstreamTimeout,
     "did not accept a connection in time", "upstream_timeout", True),
    (aiohttp.ClientConnectorError, UpstreamUnavailable,
     "is unreachable", "upstream_unavailable", True),
    (TimeoutError, UpstreamTimeout, "did not answer in time", "upstream_timeout", False),
    (aiohttp.ClientPayloadError, UpstreamProtocolError,
     "sent a malformed or truncated reply", "upstream_protocol_error", False),
    (aiohttp.ClientResponseError, UpstreamProtocolError,
     "sent an invalid HTTP reply", "upstream_protocol_error", False),
    # Disconnects, resets and other connection failures after sending began.
    (aiohttp.ClientError, UpstreamUnavailable,
     "is unreachable", "upstream_unavailable", False),
)  # fmt: skip
