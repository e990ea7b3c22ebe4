"""Memory a burst freed, given back to the system once the gateway is quiet.

After 1,000 edits at once glibc's heap held over 1 GiB of which 15-50 MiB were still
in use, and RSS stayed there: glibc returns freed memory only from the top of its main
heap, and blocks still alive (a keep-alive connection, a metric child) sit above the
freed ones. ``malloc_trim(0)`` hands the free pages inside every arena back
(``madvise``), which took RSS from 1,1xx MiB back to about idle (bench/README.md).
A lower fixed ``M_MMAP_THRESHOLD`` returned memory too, but cost 1.5-2.4x CPU on every
large buffer; a trim costs tens of milliseconds, once, off the request path: only
when few requests are in flight and RSS has grown well past what it was.

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
INTERVAL_S = 10.0
# Due when RSS is over 20% above its first reading (idle, after start-up) and either
# SLACK above what the last trim left or AGAIN_S after it: memory freed later (idle
# upstream connections close after their keep-alive) is returned too, while a
# process that truly uses more is trimmed at most once a minute.
GROWTH = 1.2
SLACK = 32 * MiB
AGAIN_S = 60.0
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
    reading taken before the gateway listens.
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
        self.trims = 0

    def _due(self, rss: int) -> bool:
        if self.baseline is None or rss < self.baseline:
            self.baseline = rss
        if rss <= self.baseline * GROWTH:
            return False
        return rss > self._left + SLACK or self._clock() - self._last >= AGAIN_S

    async def tick(self) -> bool:
        """Trim if due; whether it did."""
        return await asyncio.to_thread(self._tick)

    def _tick(self) -> bool:
        if not self._quiet():
            return False
        before = self._rss()
        if before is None or not self._due(before):
            return False
        # No gc.collect() first: it held the GIL (the event loop) for 76-112 ms
        # and RSS after the trim was the same within noise (87-93 MiB vs 89).
        start, cpu = time.perf_counter(), time.thread_time()
        self._trim()
        done = time.perf_counter()
        after = self._rss() or 0
        self._left, self._last = after, self._clock()
        self.trims += 1
        log.info(
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
