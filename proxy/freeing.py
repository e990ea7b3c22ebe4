"""Large buffers freed, and copied, off the event loop.

Freeing 256 MiB on the loop (glibc unmaps it, the kernel returns 65,536 pages) took
25-55 ms of its CPU (``bench/stall.py``, reply256kept, perf). Freed in a worker
thread it still held the loop, through the GIL a deallocation keeps; so ``release``
waits until nothing else holds the buffer, then a worker thread hands its pages back
with ``madvise`` (ctypes lets go of the GIL) and frees what is left (~3 ms).
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import sys
from collections.abc import Callable, Sequence

from proxy.tasks import TaskGroup

# Polling for the last other holder (a transport's views of the last pieces, until
# the socket took them; a store's entry, until it is dropped), from RELEASE_POLL_S,
# doubling, for at most RELEASE_WAIT_S: a buffer someone keeps is never ours to free.
RELEASE_POLL_S = 0.002
# Smaller buffers are freed where they fall: a few ms at most.
LARGE = 4 * 1024 * 1024
RELEASE_WAIT_S = 30.0
_releasing = TaskGroup()


def release(box: list[object]) -> None:
    """Free the buffers in ``box`` in a worker thread once nothing else holds them
    (the caller keeps no other reference of its own); after ``RELEASE_WAIT_S``, or
    if the loop closes, only this reference is dropped."""
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


SLICE = 1024 * 1024


def copied(pieces: Sequence[bytes | memoryview]) -> bytes:
    """In a worker thread: ``b"".join(pieces)`` a ``SLICE`` at a time. ``bytes.join``
    keeps the GIL when a piece is a memoryview (a held answer's body is one): joining a
    256 MiB answer to keep it held the event loop 135-200 ms (``bench/stall.py
    --keep-answers``). Each slice copied here holds it well under a millisecond, and
    the loop takes it between."""
    size = sum(len(p) for p in pieces)
    out = bytes(size)  # calloc: untouched pages until the copy, nobody else sees it
    start = ctypes.cast(ctypes.c_char_p(out), ctypes.c_void_p).value or 0
    target = memoryview((ctypes.c_char * size).from_address(start)).cast("B")
    at = 0
    for piece in pieces:
        view = memoryview(piece).cast("B")
        for first in range(0, len(view), SLICE):
            part = view[first : first + SLICE]
            target[at : at + len(part)] = part
            at += len(part)
    return out


def joined_freeing(pieces: list[bytes]) -> bytes:
    """In a worker thread: the pieces joined (``bytes.join`` of bytes lets go of the
    GIL), then freed here one at a time: freed with the list on the loop, 256 MiB of
    them held it for ~15 ms (the allocator returning pages); one at a time, the loop
    takes the GIL between them."""
    body = b"".join(pieces)
    while pieces:
        pieces.pop()
    return body
