"""Returning freed memory after a burst (``proxy.trim``): when it runs, and that it
gives RSS back on glibc."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys
import threading

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from proxy.backpressure import Pressure
from proxy.config import Config
from proxy.metrics import Metrics
from proxy.serve import _start_trimming
from proxy.state import CONFIG, PRESSURE
from proxy.tasks import TaskGroup
from proxy.trim import AGAIN_S, SLACK, MiB, Trimmer, libc_trim, rss_bytes

GLIBC = platform.libc_ver()[0] == "glibc"


class Process:
    """A process's RSS and load, as the trimmer sees them, and its trims."""

    def __init__(self, rss: int) -> None:
        self.rss = rss
        self.inflight = 0
        self.now = 1000.0
        self.trimmed_on: list[int | None] = []
        self.left: int | None = None  # RSS a trim leaves (default: a tenth)

    def trim(self) -> None:
        self.trimmed_on.append(threading.get_ident())
        self.rss = self.rss // 10 if self.left is None else self.left

    def trimmer(self) -> Trimmer:
        return Trimmer(
            lambda: self.inflight <= 2,
            rss=lambda: self.rss,
            trim=self.trim,
            clock=lambda: self.now,
        )


async def test_trims_once_quiet_and_far_above_its_start() -> None:
    proc = Process(60 * MiB)
    trimmer = proc.trimmer()
    assert await trimmer.tick() is False  # at its baseline
    assert trimmer.baseline == 60 * MiB
    proc.rss = 70 * MiB  # within 20% of it
    assert await trimmer.tick() is False
    proc.rss, proc.inflight = 1200 * MiB, 900  # a burst in flight
    assert await trimmer.tick() is False
    assert proc.trimmed_on == []
    proc.inflight = 2  # the burst is over
    assert await trimmer.tick() is True
    assert proc.rss == 120 * MiB
    # Off the event loop's thread: the loop serves requests meanwhile.
    assert proc.trimmed_on == [proc.trimmed_on[0]]
    assert proc.trimmed_on[0] != threading.get_ident()


async def test_not_again_until_it_grew_or_a_while_passed() -> None:
    proc = Process(60 * MiB)
    trimmer = proc.trimmer()
    assert await trimmer.tick() is False
    proc.rss = 1000 * MiB
    assert await trimmer.tick() is True  # leaves 100 MiB
    proc.rss = 100 * MiB + SLACK  # memory truly in use: no trim every tick
    proc.now += 10
    assert await trimmer.tick() is False
    proc.rss += 1
    proc.left = 90 * MiB
    assert await trimmer.tick() is True  # it grew past what the last trim left
    assert trimmer.trims == 2
    proc.rss = 100 * MiB  # freed later, less than SLACK
    proc.now += AGAIN_S - 1
    assert await trimmer.tick() is False
    proc.now += 1  # later frees (keep-alive connections closing) are returned too
    assert await trimmer.tick() is True
    assert trimmer.trims == 3


async def test_run_keeps_ticking() -> None:
    proc = Process(60 * MiB)
    trimmer = proc.trimmer()
    tasks = TaskGroup()
    tasks.spawn(trimmer.run(interval=0.01), name="trim")
    try:
        for _ in range(200):
            if trimmer.baseline is not None:
                proc.rss = 1000 * MiB
            if trimmer.trims:
                break
            await asyncio.sleep(0.01)
        assert trimmer.trims == 1
    finally:
        await tasks.close()


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim")
async def test_serve_starts_a_trimmer_that_knows_the_load() -> None:
    config = Config()
    app = web.Application()
    app[CONFIG] = config
    pressure = app[PRESSURE] = Pressure(
        config.backpressure, Metrics(CollectorRegistry())
    )
    tasks = TaskGroup()
    trimmer = await _start_trimming(app, tasks)
    try:
        assert trimmer is not None
        assert len(tasks) == 1  # its loop runs
        # Read before the gateway listens: a burst at start is not its idle.
        assert trimmer.baseline is not None
        assert trimmer.baseline > 0
        quiet = trimmer._quiet
        assert quiet()
        pressure.inflight = config.backpressure.max_inflight // 64 + 1
        assert not quiet()
    finally:
        await tasks.close()


# In a fresh interpreter: the test process's own heap is not the test's to shrink.
_TRIM_PROBE = """
from proxy.trim import libc_trim, rss_bytes
MiB = 1 << 20
# 10 KiB blocks come from glibc's main heap (under its mmap threshold); one in 64
# kept alive pins the heap, as long-lived objects a burst made do.
blocks = [bytes(10 * 1024) for _ in range(16_000)]
kept = blocks[::64]
del blocks
before = rss_bytes()
libc_trim()()
after = rss_bytes()
print(before // MiB, after // MiB)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim")
def test_malloc_trim_returns_a_pinned_heap() -> None:
    assert libc_trim() is not None
    assert rss_bytes() is not None
    done = subprocess.run(
        [sys.executable, "-c", _TRIM_PROBE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    assert before - after > 100, (before, after)
