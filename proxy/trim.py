"""Memory a burst freed, given back to the system once the gateway is quiet.

After 1,000 edits at once glibc's heap held over 1 GiB of which 15-50 MiB were still
in use, and RSS stayed there: glibc returns freed memory only from the top of its main
heap, and blocks still alive (a keep-alive connection, a metric child) sit above the
freed ones. ``malloc_trim(0)`` hands the free pages inside every arena back
(``madvise``), which took RSS from 1,1xx MiB back to about idle (bench/README.md).
A lower fixed ``M_MMAP_THRESHOLD`` returned memory too, but cost 1.5-2.4x CPU on every
large buffer; a trim costs tens of milliseconds, off the request path: when few
requests are in flight and RSS has grown well past what it was, and under load once
RSS is far above what the last trim left.

What a trim cannot return (bench/README.md, "Memory after a burst"): after 1,000
held edits, RSS settled 31-35 MiB above idle, 29 MiB of it CPython's small-object
arenas. Only a few hundred objects (~100 KiB) made during the burst outlive it
(first-use metric children, caches, executor threads), but each keeps its 1 MiB
arena: obmalloc returns an arena only when all of it is free. A second burst reuses
those arenas and leaves RSS where the first did.

glibc only: where ``malloc_trim`` or ``/proc/self/statm`` is missing (musl, macOS)
nothing runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("imagegate")

MiB = 1024 * 1024
# Every 2 s (a /proc read on a worker thread): a burst's uploads arrive within a few
# seconds, and a trim under load helps while its edits wait for their providers.
INTERVAL_S = 2.0
# Due when RSS is over 20% above its first reading (idle, after start-up) and either
# SLACK above what the last trim left or AGAIN_S after it: memory freed later is
# returned too, while a process that truly uses more is trimmed at most every AGAIN_S.
# The burst's idle upstream connections close one to two keep-alives (30 s) after
# it, with 5-7 MiB of heap that only a trim returns; at 60 s that came back 60-130 s
# after the burst, at 20 s within 20 s of their closing. A trim with little to
# return costs 1-2 ms (after a 1,000-edit burst: 1.2 ms, 1.3 ms of CPU).
GROWTH = 1.2
SLACK = 32 * MiB
AGAIN_S = 20.0
# Under load too, once RSS is LOAD_SLACK above what the last trim left: 1,000
# uploads at once left glibc's heap with 29 MiB in use and 185 MiB free but
# resident (their transient read buffers); one trim took RSS from 297 to 115 MiB in
# 23 ms (18 ms of CPU, on a worker thread).
LOAD_SLACK = 96 * MiB
# and at most every LOAD_AGAIN_S: a heap that refills as fast as it is trimmed (its
# pages faulted back in) costs at most one trim, tens of ms of CPU, per 5 s.
LOAD_AGAIN_S = 5.0
# A trim that returned less is logged at debug: one that finds nothing recurs.
LOGGED = MiB
_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(path: Path = _STATM) -> int | None:
    """This process's resident set, from ``/proc`` (one small read); None off Linux."""
    try:
        return int(path.read_bytes().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def libc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class Trimmer:
    """Decides, each ``tick``, whether a trim is due, and does it.

    ``quiet`` says whether few enough requests are in flight; ``rss`` reads the
    resident set; ``trim`` returns free memory. A tick runs on a worker thread: it
    reads ``/proc`` and ctypes lets go of the GIL for the trim, so the event loop
    serves meanwhile. The baseline is the lowest RSS seen while quiet, the first
    reading taken before the gateway listens; under load a trim is due only once
    RSS is LOAD_SLACK above both it and what the last trim left.
    """

    def __init__(
        self,
        quiet: Callable[[], bool],
        *,
        rss: Callable[[], int | None] = rss_bytes,
        trim: Callable[[], object],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quiet = quiet
        self._rss = rss
        self._trim = trim
        self._clock = clock
        self.baseline: int | None = None
        self._left = 0  # RSS after the last trim
        self._last = -math.inf  # when it ran
        self._loaded = False  # a tick saw load at or since the last trim
        self.trims = 0

    def _due(self, rss: int, quiet: bool) -> bool:
        if not quiet:
            self._loaded = True
            if self.baseline is None:
                return False
            if self._clock() - self._last < LOAD_AGAIN_S:
                return False
            return rss > max(self._left, self.baseline) + LOAD_SLACK
        if self.baseline is None or rss < self.baseline:
            self.baseline = rss
        if rss <= self.baseline * GROWTH:
            return False
        since = self._clock() - self._last
        # The first quiet tick after load: a trim under load late in a burst left
        # RSS that the burst's end then freed (seen: 20 s more at 230-330 MiB).
        if self._loaded and since >= LOAD_AGAIN_S:
            return True
        return rss > self._left + SLACK or since >= AGAIN_S

    async def tick(self) -> bool:
        """Trim if due; whether it did."""
        return await asyncio.to_thread(self._tick)

    def _tick(self) -> bool:
        quiet = self._quiet()
        before = self._rss()
        if before is None or not self._due(before, quiet):
            return False
        # No gc.collect() first: it held the GIL (the event loop) for 76-112 ms
        # and RSS after the trim was the same within noise (87-93 MiB vs 89).
        start, cpu = time.perf_counter(), time.thread_time()
        self._trim()
        done = time.perf_counter()
        after = self._rss() or 0
        self._left, self._last, self._loaded = after, self._clock(), not quiet
        self.trims += 1
        log.log(
            logging.INFO if before - after >= LOGGED else logging.DEBUG,
            "memory returned to the system",
            extra={
                "fields": {
                    "rss_before_mib": round(before / MiB, 1),
                    "rss_after_mib": round(after / MiB, 1),
                    "trim_ms": round((done - start) * 1000, 1),
                    "cpu_ms": round((time.thread_time() - cpu) * 1000, 1),
                }
            },
        )
        return True

    async def run(self, interval: float = INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:  # a failed trim must not end the loop; logged once
                log.exception("memory trim failed")
                return


def trimmer(quiet: Callable[[], bool]) -> Trimmer | None:
    """A ``Trimmer`` over glibc's ``malloc_trim``; None where it cannot work."""
    trim = libc_trim()
    if trim is None or not sys.platform.startswith("linux"):  # /proc/self/statm
        return None
    return Trimmer(quiet, trim=trim)
