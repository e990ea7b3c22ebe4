"""imagegate with a probe of its event loop's turns, in CPU time.

``python -m bench.loopsteps OUT [imagegate args]`` runs ``python -m proxy`` on the
same loop (uvloop) with a heartbeat every millisecond. Between two heartbeats the
main thread's CPU time (``time.thread_time``: preemption by other processes and the
worker threads do not count) is what the loop's turns in between cost; each gap over
1 ms is appended to OUT as ``wall-clock-time cpu-seconds wall-seconds``. On this
shared 2-core machine a wall-clock stall says as much about the neighbours as about
imagegate; the CPU gap is the stall imagegate itself would cause on an idle core.
The figure is an upper bound on the longest single step at a 1-2 ms resolution.
A loop kept waiting by a worker thread that holds the GIL spends no CPU meanwhile:
each gap also records the time the main thread waited for a CPU (the kernel's
``schedstat``), and the gap less that wait is the stall the process caused itself,
its own CPU plus its waits for the GIL (``own`` below; 0-1 ms of it the heartbeat).

With ``LOOPSTEPS_TRACE=FILE`` (and ``LOOPSTEPS_TRACE_MS``, default 10) every heartbeat
re-arms ``faulthandler.dump_traceback_later``: a step longer than that has the stack
of every thread written to FILE while it runs, GIL held or not (what the loop is
doing, or which thread keeps it from running), after a line ``beat TIME`` of the
heartbeat that began it and its gap as a line ``gap ...`` (``python -m bench.loopsteps --traced FILE [MS]``
prints the stacks of the steps whose own gap was over MS).
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

HEARTBEAT_S = 0.001
RECORD_OVER_S = 0.001


def _queued() -> Callable[[], float]:
    """The calling thread's time spent runnable but not running (s) so far; 0 where
    ``/proc`` has no ``schedstat``."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return lambda: 0.0
    return lambda: int(os.pread(fd, 100, 0).split()[1]) / 1e9


def _install(
    loop: asyncio.AbstractEventLoop, out: BinaryIO, trace: BinaryIO | None = None
) -> None:
    queued = _queued()
    last = [time.thread_time(), time.monotonic(), queued()]
    after = float(os.environ.get("LOOPSTEPS_TRACE_MS", "10")) / 1000

    def beat() -> None:
        cpu, wall, waited = time.thread_time(), time.monotonic(), queued()
        gap = cpu - last[0]
        if gap > RECORD_OVER_S or wall - last[1] > 5 * RECORD_OVER_S:
            line = (
                f"{time.time():.4f} {gap:.5f} {wall - last[1]:.5f} "
                f"{waited - last[2]:.5f}\n".encode()
            )
            out.write(line)
            if trace is not None:
                trace.write(b"gap " + line)
        # Read again after the write, so that the probe's own cost is not counted.
        if trace is not None:  # a dump follows the beat that began its step
            trace.write(f"beat {time.time():.4f}\n".encode())
            faulthandler.dump_traceback_later(after, file=trace)
        last[0], last[1], last[2] = time.thread_time(), time.monotonic(), queued()
        loop.call_later(HEARTBEAT_S, beat)

    loop.call_soon(beat)


def show_traced(trace: str, over_ms: float = 10) -> None:
    """The stacks dumped in the steps whose own gap (``longest``) was over_ms."""
    starts, dumps = [], []
    for block in Path(trace).read_text(errors="replace").split("beat ")[1:]:
        stamp, _, rest = block.partition("\n")
        stacks = "".join(x for x in rest.splitlines(True) if not x.startswith("gap "))
        if stacks.strip():
            dumps.append((float(stamp), stacks))
        for line in rest.splitlines():
            if line.startswith("gap "):
                t, _, w, q = (float(x) for x in line.split()[1:5])
                if w - q > over_ms / 1000:
                    starts.append((t - w, w - q))
    for start, own in starts:
        near = [d for d in dumps if abs(d[0] - start) < 0.003]
        print(f"--- own {1000 * own:.1f} ms at {start:.4f}: {len(near)} dump(s)")
        for _, stacks in near[:1]:
            print(stacks)


def main() -> int:
    if sys.argv[1] == "--traced":
        show_traced(sys.argv[2], *(float(x) for x in sys.argv[3:4]))
        return 0
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


def longest(
    path: str, windows: list[tuple[float, float]]
) -> tuple[float, float, float]:
    """The longest CPU gap, wall gap and own gap (wall less the wait for a CPU), in
    seconds, recorded within ``windows``."""
    cpu = wall = own = 0.0
    for line in Path(path).read_text().splitlines():
        t, c, w, q = (float(x) for x in [*line.split(), "0"][:4])
        # A gap is recorded at its end: it began up to its wall length before.
        if any(a <= t and t - w <= b for a, b in windows):
            cpu, wall, own = max(cpu, c), max(wall, w), max(own, w - q)
    return cpu, wall, own


if __name__ == "__main__":
    sys.exit(main())
