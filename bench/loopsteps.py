"""imagegate with a probe of its event loop's turns, in CPU time.

``python -m bench.loopsteps OUT [imagegate args]`` runs ``python -m proxy`` on the
same loop (uvloop) with a heartbeat every millisecond. Between two heartbeats the
main thread's CPU time (``time.thread_time``: preemption by other processes and the
worker threads do not count) is what the loop's turns in between cost; each gap over
1 ms is appended to OUT as ``wall-clock-time cpu-seconds wall-seconds``. On this
shared 2-core machine a wall-clock stall says as much about the neighbours as about
imagegate; the CPU gap is the stall imagegate itself would cause on an idle core.
The figure is an upper bound on the longest single step at a 1-2 ms resolution.

With ``LOOPSTEPS_TRACE=FILE`` (and ``LOOPSTEPS_TRACE_MS``, default 10) every heartbeat
re-arms ``faulthandler.dump_traceback_later``: a step longer than that has the stack
of every thread written to FILE while it runs, GIL held or not (what the loop is
doing, or which thread keeps it from running).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO

HEARTBEAT_S = 0.001
RECORD_OVER_S = 0.001


def _install(
    loop: asyncio.AbstractEventLoop, out: BinaryIO, trace: BinaryIO | None = None
) -> None:
    last = [time.thread_time(), time.monotonic()]
    after = float(os.environ.get("LOOPSTEPS_TRACE_MS", "10")) / 1000

    def beat() -> None:
        cpu, wall = time.thread_time(), time.monotonic()
        gap = cpu - last[0]
        if gap > RECORD_OVER_S or wall - last[1] > 5 * RECORD_OVER_S:
            out.write(f"{time.time():.4f} {gap:.5f} {wall - last[1]:.5f}\n".encode())
        # Read again after the write, so that the probe's own cost is not counted.
        if trace is not None:
            faulthandler.dump_traceback_later(after, file=trace)
        last[0], last[1] = time.thread_time(), time.monotonic()
        loop.call_later(HEARTBEAT_S, beat)

    loop.call_soon(beat)


def main() -> int:
    import proxy.__main__ as entry  # here: the bench reads ``longest`` without it

    out = open(sys.argv[1], "ab", buffering=0)  # noqa: SIM115 - for the process's life
    plain = entry.new_event_loop
    traced = os.environ.get("LOOPSTEPS_TRACE")
    trace = open(traced, "ab", buffering=0) if traced else None  # noqa: SIM115

    def probed() -> asyncio.AbstractEventLoop:
        loop = plain()
        _install(loop, out, trace)
        return loop

    entry.new_event_loop = probed
    return entry.main(sys.argv[2:])


def longest(path: str, windows: list[tuple[float, float]]) -> tuple[float, float]:
    """The longest CPU gap and the longest wall gap (s) recorded within ``windows``."""
    cpu = wall = 0.0
    for line in Path(path).read_text().splitlines():
        t, c, w = (float(x) for x in line.split())
        # A gap is recorded at its end: it began up to its wall length before.
        if any(a <= t and t - w <= b for a, b in windows):
            cpu, wall = max(cpu, c), max(wall, w)
    return cpu, wall


if __name__ == "__main__":
    sys.exit(main())
