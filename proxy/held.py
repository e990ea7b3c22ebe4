"""A large answer held whole (not relayed as it arrives), written in bounded pieces.

``web.Response(body=...)`` hands the whole body to the transport in one call: for a
256 MiB reply aiohttp joins it with the headers and the transport copies what the
socket did not take, one step of the event loop of hundreds of milliseconds
(``bench/stall.py``, reply256kept). ``HeldResponse`` announces the same Content-Length
and writes the body's pieces in ``PIECE``-sized views, draining between them, so the
client gets the same bytes and headers and no step copies more than a piece.

Once written, the body's large buffers are freed off the loop
(``proxy.freeing.release``): freeing 256 MiB on it was its longest step, 25-55 ms of
CPU (``bench/stall.py``, reply256kept).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from proxy.freeing import copied, release

# A body up to this is answered as ``web.Response`` as before (a few ms at most).
WHOLE = 4 * 1024 * 1024
PIECE = 1024 * 1024

Piece = bytes | memoryview


class HeldResponse(web.StreamResponse):
    """``pieces`` (their concatenation is the body) sent with a Content-Length."""

    def __init__(
        self,
        pieces: Iterable[Piece],
        *,
        status: int = 200,
        content_type: str = "application/json",
    ) -> None:
        super().__init__(status=status)
        self.pieces: tuple[Piece, ...] = tuple(pieces)
        self.size = sum(len(p) for p in self.pieces)
        self.content_type = content_type
        self.content_length = self.size
        self._sent = False

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        # No body after the head of a HEAD answer (a GET route answers HEAD too):
        # web.Response leaves it out; bytes written here would be read as the
        # connection's next answer.
        if request.method == hdrs.METH_HEAD:
            self._sent, self.pieces = True, ()
        return await super().prepare(request)

    async def write_eof(self, data: bytes = b"") -> None:
        # Called by the middleware and again by aiohttp: the body once.
        if not self._sent:
            self._sent = True
            await self._write_pieces()  # its locals (views of the body) gone with it
            release([_base(p) for p in self.pieces if len(p) > WHOLE])
            self.pieces = ()
        await super().write_eof(data)

    async def _write_pieces(self) -> None:
        for piece in self.pieces:
            view = memoryview(piece)
            for at in range(0, len(view), PIECE):
                await self.write(view[at : at + PIECE])
                # A client reading as fast as loopback goes takes every piece at
                # once, so write() never waits to drain and 256 MiB went out in one
                # step of the loop (45-99 ms of its CPU, bench/stall.py
                # reply256kept on an idle machine): a turn for the others per piece.
                await asyncio.sleep(0)


def _base(piece: Piece) -> object:
    # What a view keeps alive: the buffer to free.
    return piece.obj if isinstance(piece, memoryview) else piece


async def joined(pieces: Sequence[Piece]) -> bytes:
    """The pieces as one ``bytes``; a large join in a worker thread, in slices."""
    if sum(len(p) for p in pieces) > WHOLE:
        return await asyncio.to_thread(copied, pieces)
    return b"".join(pieces)


def response(pieces: Sequence[Piece], *, status: int = 200) -> web.StreamResponse:
    """A JSON answer: small ones as ``web.Response``, large ones in pieces."""
    if sum(len(p) for p in pieces) <= WHOLE:
        return web.Response(
            status=status, body=b"".join(pieces), content_type="application/json"
        )
    return HeldResponse(pieces, status=status)
