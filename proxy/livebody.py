"""An upload's bytes handed from the client's body to the provider's as they arrive.

``Pipe`` is the hand-off between the intake (``proxy.forward``), which reads one image
part from the client and puts its chunks, and the upstream body (``proxy.formwriter``),
which takes them and writes them to the provider's connection in chunked encoding. At
most about ``QUEUED`` bytes wait in it: the client is read no faster than the provider
takes, so a request's memory stays bounded however large its image.

It ends in one of two ways. ``finish`` once the client's whole body has been read and
checked: the upstream body then ends with its closing boundary and the terminating
chunk. ``abort`` on anything else (an image or body check failed, the client went away,
the form turned out not to be forwardable): the provider's connection is closed at
once, without the terminating chunk, so the provider never holds a complete request
(RFC 9112 7.1: a chunked message is complete only with its last chunk).

No module of ours is imported here: ``proxy.models`` names the type.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

# Bytes that may wait between the intake and the provider's connection: enough that
# neither waits for the other at every socket chunk, little against a request's spool.
QUEUED = 256 * 1024


class NotForwarded(Exception):
    """Why a forwarded body was cut off when no client error says it: the form is to
    run from its spooled parts, or the client's body ended early."""


class Closable(Protocol):
    """The provider connection's transport, as far as an abort needs it."""

    def abort(self) -> None: ...


class Pipe:
    """One image part's chunks, from the client's body to the provider's."""

    def __init__(self, head: bytes) -> None:
        # The part's first bytes (type sniff, pixel header): checked before any
        # provider is called, and the first bytes the provider gets.
        self.head = head
        self._items: deque[bytes | memoryview] = deque([head])
        self._queued = len(head)
        self._loop = asyncio.get_running_loop()
        self._taker: asyncio.Future[None] | None = None
        self._putter: asyncio.Future[None] | None = None
        self.ended = False
        self.error: BaseException | None = None
        self.closed = False  # nobody will take more (the upstream call is over)
        self.lost = False  # a chunk was put after that: this pipe can never end well
        # The same image as spooled by the intake (a ``StoredImage``), set before
        # ``finish``: what a retry of the call sends (``proxy.formwriter``).
        self.whole: Any = None
        self.taken = 0  # bytes handed to the upstream body
        self.started = False  # the upstream body began to take
        self._transport: Closable | None = None
        self._settled: asyncio.Future[None] = self._loop.create_future()

    @staticmethod
    def _wake(fut: asyncio.Future[None] | None) -> None:
        if fut is not None and not fut.done():
            fut.set_result(None)

    @property
    def full(self) -> bool:
        """A ``put`` now would wait for the provider to take."""
        return self._queued >= QUEUED

    async def put(self, chunk: bytes | memoryview) -> None:
        """Hand on ``chunk``, waiting while ``QUEUED`` bytes are not taken yet."""
        while self._queued >= QUEUED and not self.closed and self.error is None:
            self._putter = self._loop.create_future()
            await self._putter
        if self.closed or self.error is not None:
            self.lost = True
            return
        self._items.append(chunk)
        self._queued += len(chunk)
        self._wake(self._taker)

    def finish(self) -> None:
        """The client's body was read and checked whole: the upstream body may end."""
        self.ended = True
        self._wake(self._taker)
        self._wake(self._settled)

    def abort(self, error: BaseException) -> None:
        """Never let the upstream body complete; its connection is closed now."""
        if self.ended or self.error is not None:
            return
        self.error = error
        self._items.clear()
        self._queued = 0
        if self._transport is not None:
            # A body blocked on a provider that stopped reading ends here too.
            self._transport.abort()
        self._wake(self._taker)
        self._wake(self._putter)
        self._wake(self._settled)

    async def settled(self) -> None:
        """Returns once the client's body was read whole; raises the abort's error."""
        await asyncio.shield(self._settled)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """The upstream call is over: the intake stops waiting for it to take."""
        self.closed = True
        self._wake(self._putter)

    def attach(self, transport: Closable | None) -> None:
        self.started = True
        self._transport = transport
        if self.error is not None and transport is not None:
            transport.abort()

    async def take(self) -> bytes | memoryview | None:
        """The next chunk; None once ``finish``ed; raises the error once aborted."""
        while True:
            if self.error is not None:
                raise self.error
            if self._items:
                chunk = self._items.popleft()
                self.taken += len(chunk)
                self._queued -= len(chunk)
                self._wake(self._putter)
                return chunk
            if self.lost:  # a body short of bytes must never end
                raise NotForwarded("a chunk was put after the body was closed")
            if self.ended:
                return None
            self._taker = self._loop.create_future()
            await self._taker
