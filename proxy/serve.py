"""Serving until SIGTERM or SIGINT, then a graceful shutdown.

On the signal ``/readyz`` fails at once (``draining``) and the listening socket closes,
so no new connection is accepted; requests in flight get ``server.shutdown_timeout_s``
to finish, then aiohttp cancels what is left (each request's temp files are removed on
the way out); the cleanup contexts then remove the temp directory and close upstream
sessions and the limits store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from aiohttp import web

from proxy.listener import AcceptingSite
from proxy.state import CONFIG, LIFECYCLE, PRESSURE
from proxy.tasks import TaskGroup
from proxy.trim import Trimmer, trimmer

log = logging.getLogger("imagegate")

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
# aiohttp pauses a request body's socket once 2 x read_bufsize bytes wait unread;
# its default (256 KiB) let each of 1,000 uploads waiting for a body turn hold
# 512-768 KiB (issue 19). 16 KiB: 32 KiB plus one socket read (uvloop reads up to
# 256 KiB). Burst peak per edit 499 KiB at 64 KiB, 389 at 16; instructions per
# request the same (callgrind: realistic-c16 18.99M vs 18.95M, upload1-c16 27.94M
# vs 27.79M).
READ_BUFSIZE = 16 * 1024


def somaxconn(path: Path = SOMAXCONN) -> int | None:
    """The kernel's cap on any listen backlog; None where it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def effective_backlog(backlog: int, path: Path = SOMAXCONN) -> int:
    """The backlog the kernel will grant; a warning when somaxconn cuts it."""
    cap = somaxconn(path)
    if cap is None or cap >= backlog:
        return backlog
    log.warning(
        "listen backlog capped by the kernel: raise net.core.somaxconn",
        extra={"fields": {"backlog": backlog, "somaxconn": cap}},
    )
    return cap


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout_s: float,
    keepalive_timeout_s: float = 75.0,
    reuse_port: bool = False,
    backlog: int = 4096,
) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=shutdown_timeout_s,
        keepalive_timeout=keepalive_timeout_s,
        read_bufsize=READ_BUFSIZE,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    background = TaskGroup()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # reuse_port: the workers of `--workers N` share one port (SO_REUSEPORT).
        # A high backlog (``effective_backlog``): a burst of clients waits in the
        # kernel's accept queue instead of being reset (issue 19: aiohttp's default
        # of 128 reset 316 of 1,000 clients).
        # AcceptingSite, not aiohttp's TCPSite: uvloop accepts one connection per
        # turn of the loop, and a burst waited seconds to be accepted (listener.py).
        await _start_trimming(app, background)
        site = AcceptingSite(runner, host, port, reuse_port=reuse_port, backlog=backlog)
        await site.start()
        log.info(
            "listening",
            extra={"fields": {"host": host, "port": port, "backlog": backlog}},
        )
        await stop.wait()
        app[LIFECYCLE].draining = True
        log.info("draining", extra={"fields": {"in_flight": app[PRESSURE].inflight}})
    finally:
        await background.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    log.info("stopped")


async def _start_trimming(app: web.Application, tasks: TaskGroup) -> Trimmer | None:
    """Free memory back to the system after bursts (``proxy.trim``), checked while at
    most 1/64 of ``max_inflight`` requests are in flight (8 at the default). Called
    before the gateway listens: the first tick reads the idle baseline."""
    pressure = app[PRESSURE]
    quiet = app[CONFIG].backpressure.max_inflight // 64
    found = trimmer(lambda: pressure.inflight <= quiet)
    if found is not None:
        await found.tick()
        tasks.spawn(found.run(), name="imagegate-trim")
    return found
