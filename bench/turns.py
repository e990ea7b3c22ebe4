"""imagegate with a probe of its event loop's turns: ``python -m bench.turns OUT ARGS``.

Runs ``python -m proxy ARGS`` with a timer on its loop every ``TICK_S``; between two
ticks, the thread's CPU time (``time.thread_time``) is what the loop ran meanwhile: a
long gap is a long turn. Gaps over ``REPORT_S`` of wall time are appended to OUT as
JSON lines ``[monotonic end, wall s, cpu s, accepts, head reads, answers]`` (the
last three as the logs below counted them in that gap). CPU is what the loop itself spent;
wall minus CPU is the time it waited for a core (other work on the machine) or for
the kernel. Beside OUT, three logs name each connection by its peer's port (the
load client and the ``/healthz`` probe keep their local ports), each line with the
monotonic time and the loop thread's CPU clock: ``accepts.jsonl`` (``[time, port,
cpu]`` at ``accept()``), ``heads.jsonl`` (each read of a head, the same shape: when
a request reached the gateway; a loaded client sends late) and ``answers.jsonl``
(``[time, port, cpu, status, path]`` once ``proxy.middleware.observe`` wrote the answer).
``bench/gateway_log.py`` reads them. Used by
``bench.inflight --turns``; never in production. With
``BENCH_TURNS_CPROFILE=PATH`` in the environment the process is also profiled
(cProfile), its stats written to PATH at exit.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

import msgspec
from aiohttp import web

import proxy.__main__ as gateway
import proxy.app
import proxy.listener as listener
from proxy.middleware import Handler

TICK_S = 0.001
REPORT_S = 0.02


class Log:
    """Accepts, head reads and answers noted since the last tick, as JSON lines."""

    def __init__(self, accepts: IO[str], answers: IO[str], heads: IO[str]) -> None:
        self.accepts, self.answers, self.heads = accepts, answers, heads
        self.accepted: list[str] = []
        self.answered: list[str] = []
        self.read: list[str] = []

    def flush(self) -> None:
        for lines, out in (
            (self.accepted, self.accepts),
            (self.answered, self.answers),
            (self.read, self.heads),
        ):
            if lines:
                out.write("".join(lines))
                out.flush()
                lines.clear()


class TurnProbe:
    def __init__(self, loop: asyncio.AbstractEventLoop, out: IO[str], log: Log) -> None:
        self._loop = loop
        self._out = out
        self._log = log
        self._wall = time.monotonic()
        self._cpu = time.thread_time()
        loop.call_later(TICK_S, self._tick)

    def _tick(self) -> None:
        wall, cpu = time.monotonic(), time.thread_time()
        gap = wall - self._wall
        if gap > REPORT_S:
            # What the turn did: connections accepted, head reads, answers written.
            log = self._log
            done = f"{len(log.accepted)}, {len(log.read)}, {len(log.answered)}"
            self._out.write(f"[{wall:.6f}, {gap:.6f}, {cpu - self._cpu:.6f}, {done}]\n")
            self._out.flush()
        self._log.flush()
        self._wall, self._cpu = time.monotonic(), time.thread_time()
        self._loop.call_later(TICK_S, self._tick)


def note(log: Log) -> None:
    """Note each accepted connection and each answer written (module doc); before
    the app is made, which takes ``proxy.app.observe`` then."""
    connect = listener._connect

    def accepted(
        loop: asyncio.AbstractEventLoop, conn: socket.socket, factory: Any
    ) -> Any:
        at = time.monotonic()
        try:
            port = conn.getpeername()[1]
        except OSError:  # the client already left
            port = 0
        log.accepted.append(f"[{at:.6f}, {port}, {time.thread_time():.6f}]\n")
        return connect(loop, conn, factory)

    listener._connect = accepted  # type: ignore[assignment]
    observe = proxy.app.observe

    @web.middleware
    async def answered(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await observe(request, handler)  # the answer is written
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        port = peer[1] if peer else 0
        line = [time.monotonic(), port, time.thread_time(), resp.status, request.path]
        log.answered.append(msgspec.json.encode(line).decode() + "\n")
        return resp

    proxy.app.observe = answered  # type: ignore[assignment]
    buffer_updated = listener.HeadFirst.buffer_updated

    def head_read(self: listener.HeadFirst, nbytes: int) -> None:
        if self._held and self._transport is not None:
            peer = self._transport.get_extra_info("peername")
            at, cpu = time.monotonic(), time.thread_time()
            log.read.append(f"[{at:.6f}, {peer[1] if peer else 0}, {cpu:.6f}]\n")
        buffer_updated(self, nbytes)

    listener.HeadFirst.buffer_updated = head_read  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    out = Path(argv[0]).open("a")  # noqa: SIM115 (open for the process's life)
    log = Log(
        Path(argv[0]).with_name("accepts.jsonl").open("a"),
        Path(argv[0]).with_name("answers.jsonl").open("a"),
        Path(argv[0]).with_name("heads.jsonl").open("a"),
    )
    note(log)
    make = gateway.new_event_loop

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = make()
        TurnProbe(loop, out, log)
        return loop

    gateway.new_event_loop = new_event_loop  # type: ignore[assignment]
    stats = os.environ.get("BENCH_TURNS_CPROFILE")
    if not stats:
        return gateway.main(argv[1:])
    profile = cProfile.Profile()
    try:
        return profile.runcall(gateway.main, argv[1:])
    finally:
        profile.dump_stats(stats)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
