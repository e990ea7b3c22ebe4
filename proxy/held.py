"""A large answer held whole (not relayed as it arrives), written in bounded pieces.

``web.Response(body=...)`` hands the whole body to the transport in one call: for a
256 MiB reply aiohttp joins it with the headers and the transport copies what the
socket did not take, one step of the event loop of hundreds of milliseconds
(``bench/stall.py``, reply256kept). ``HeldResponse`` announces the same Content-Length
and writes the body's pieces in ``PIECE``-sized views, draining between them, so the
client gets the same bytes and headers and no step copies more than a piece.

Once written, the body's large buffers are freed off the loop (``release``): freeing
256 MiB (glibc unmaps it, the kernel returns 65,536 pages) was the loop's longest
step, 25-55 ms of CPU (``bench/stall.py``, reply256kept, perf). Freed in a worker
thread it still held the loop, through the GIL a deallocation keeps; so the thread
first hands the pages back with ``madvise`` (ctypes lets go of the GIL), and the
free that follows has nothing left to return.
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import sys
from collections.abc import Callable, Iterable, Sequence

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from proxy.tasks import TaskGroup

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


def _base(piece: Piece) -> object:
    # What a view keeps alive: the buffer to free.
    return piece.obj if isinstance(piece, memoryview) else piece


# Polling for the last other holder (the transport's views of the last pieces, until
# the socket took them), from RELEASE_POLL_S, doubling, for at most RELEASE_WAIT_S:
# an answer the idempotency store keeps is never ours to free.
RELEASE_POLL_S = 0.002
RELEASE_WAIT_S = 30.0
_releasing = TaskGroup()


def release(box: list[object]) -> None:
    """Free the buffers in ``box`` (the caller's only references) in a worker thread
    once nothing else holds them; after ``RELEASE_WAIT_S``, or if the loop closes,
    only this reference is dropped."""
    if box:
        _releasing.spawn(_release(box), name="held-release")


Advise = Callable[[int, int, int], int]


def _madvise() -> Advise | None:
    """libc's ``madvise``, or None where there is none (the pages then go with the
    free, in the worker thread but holding the GIL)."""
    if not hasattr(mmap, "MADV_DONTNEED"):  # pragma: no cover - not Linux or BSD
        return None
    try:
        advise = ctypes.CDLL(None).madvise
    except (AttributeError, OSError):  # pragma: no cover
        return None
    advise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    advise.restype = ctypes.c_int
    return advise


_ADVISE = _madvise()


def _give_back(box: list[object]) -> None:
    """In a worker thread: the pages wholly inside each ``bytes`` of ``box`` (which
    nothing else holds: their contents become zeros) returned to the kernel, then
    the objects freed."""
    for data in box:
        if _ADVISE is not None and isinstance(data, bytes):
            _drop_pages(_ADVISE, data)
    box.clear()


def _drop_pages(advise: Advise, data: bytes) -> None:
    pointer = ctypes.c_char_p(data)  # the object's own buffer, not a copy
    start = ctypes.cast(pointer, ctypes.c_void_p).value or 0
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    end = (start + len(data)) // mmap.PAGESIZE * mmap.PAGESIZE
    if end > first:  # the allocator's headers lie outside [first, end)
        advise(first, end - first, mmap.MADV_DONTNEED)


async def _release(box: list[object]) -> None:
    wait, waited = RELEASE_POLL_S, 0.0
    # 2: the list's reference and getrefcount's argument.
    while any(sys.getrefcount(box[i]) > 2 for i in range(len(box))):
        if waited >= RELEASE_WAIT_S:
            box.clear()
            return
        await asyncio.sleep(wait)
        waited, wait = waited + wait, min(2 * wait, 1.0)
    await asyncio.to_thread(_give_back, box)


async def joined(pieces: Sequence[Piece]) -> bytes:
    """The pieces as one ``bytes``; a large join in a worker thread (``bytes.join``
    copies without the GIL)."""
    if sum(len(p) for p in pieces) > WHOLE:
        return await asyncio.to_thread(b"".join, pieces)
    return b"".join(pieces)


def response(pieces: Sequence[Piece], *, status: int = 200) -> web.StreamResponse:
    """A JSON answer: small ones as ``web.Response``, large ones in pieces."""
    if sum(len(p) for p in pieces) <= WHOLE:
        return web.Response(
            status=status, body=b"".join(pieces), content_type="application/json"
        )
    return HeldResponse(pieces, status=status)
