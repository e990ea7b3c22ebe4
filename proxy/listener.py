"""The listening socket, accepting every connection waiting at each wake-up.

uvloop (libuv) accepts one connection per turn of the event loop. A turn that serves
a thousand uploads takes tens to hundreds of milliseconds, so a burst of 1,000
clients waited seconds in the kernel's accept queue: 829 connections sat there for
7 s while ``/healthz`` and the 503 refusals, answered at once once read, took
6-9 s (issue 19, strace: one ``accept4`` per ``epoll_pwait``). ``AcceptingSite``
binds the socket itself and, each time it is readable, accepts up to
``ACCEPT_BATCH`` connections, handing each to the loop as an accepted socket
(``loop.connect_accepted_socket``) with aiohttp's request handler as its protocol,
behind a ``HeadFirst``. Its transport is made there and then (``_connect``), not in a
task a turn later.

``HeadFirst`` reads a new connection's request head, not its body: at most
``HEAD_READ`` bytes a read until the head's end is in, then nothing until ``release``:
when the request reads its body (``bodystream.request_body``) or is answered
(``proxy.admission``). uvloop otherwise reads up to 256 KiB from every readable
socket on every turn, and a burst of 1,000 uploads cost the loop a read of each
body's first 128-384 KiB (copies into fresh pages, 0.1-0.4 ms apiece) before any
request had started: turns of 0.4-0.5 s of CPU with ``/healthz`` waiting behind them.
Released, the connection is aiohttp's protocol's alone, read as before.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
from collections.abc import Coroutine
from typing import Any, cast

from aiohttp import web

log = logging.getLogger("imagegate")

# Connections accepted per wake-up; the rest wait in the kernel's queue for the next
# turn. Each one accepted is, a turn or two later, its head read and its request
# started or refused (0.3-0.7 ms of CPU with the gateway's middleware): a batch of
# 256 made turns of 150-190 ms of CPU at C = 2,000, and the 503s answered in them
# came up to 0.96 s after their accept; 32 (as many as start a turn, STARTS_PER_TURN)
# brought that to 0.15 s, with the same time from the clients' connect (issue 19).
ACCEPT_BATCH = 32
# A read before the request starts: most heads fit; a longer head takes more reads.
HEAD_READ = 16 * 1024
# The most a read takes once the request started (as uvloop's own reads).
BODY_READ = 256 * 1024
# A connection whose request never reached the middleware (aiohttp answered it
# itself: a malformed head, an Expect refused) reads on after this long.
HOLD_MAX_S = 5.0
_END = b"\r\n\r\n"
# Out of descriptors or memory: wait this long before accepting again (as asyncio).
_RETRY_S = 1.0
_TRANSIENT = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})


class HeadFirst(asyncio.BufferedProtocol):
    """aiohttp's protocol for one connection, fed its request head first (module doc).

    Reads go into one buffer of the loop's (``_Reads``), copied out at once, as
    uvloop's own reads are."""

    __slots__ = ("_held", "_inner", "_reads", "_tail", "_timer", "_transport")

    def __init__(self, inner: Any, reads: _Reads) -> None:
        self._inner = inner
        self._reads = reads
        self._held = True
        self._tail = b""  # the last bytes read while held: a head's end may straddle
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance.
        self._transport = cast(asyncio.Transport, transport)
        self._inner.connection_made(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reads.view[: HEAD_READ if self._held else BODY_READ]

    def buffer_updated(self, nbytes: int) -> None:
        data = bytes(self._reads.view[:nbytes])
        if self._held and self._timer is None:
            seen = self._tail + data
            if _END in seen:
                # The head is in: the body waits for the request to start.
                assert self._transport is not None
                self._transport.pause_reading()
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(HOLD_MAX_S, self.release)
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def release(self) -> None:
        """The request reads its body: the connection is aiohttp's from now on."""
        if not self._held:
            return
        self._held = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # Handed to aiohttp's protocol itself, with uvloop's own reads: nothing of
        # ours on the path of later reads. uvloop picks how it reads when reading
        # starts, hence the pause first.
        transport.pause_reading()
        transport.set_protocol(self._inner)
        transport.resume_reading()

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _Reads:
    """The buffer every connection's reads go into, one read at a time."""

    __slots__ = ("view",)

    def __init__(self) -> None:
        self.view = memoryview(bytearray(BODY_READ))


def release(transport: asyncio.BaseTransport | None) -> None:
    """Read on from ``transport``: its request reads its body, or was answered."""
    if transport is not None:
        protocol = transport.get_protocol()
        if isinstance(protocol, HeadFirst):
            protocol.release()


class _Listeners(asyncio.AbstractServer):
    """The sockets a site listens on, closed by ``close()`` (``BaseSite.stop``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, socks: list[socket.socket]):
        self._loop = loop
        self.sockets = socks
        self._serving = True

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def wait_closed(self) -> None:
        """Nothing to wait for: a connection accepted has its transport at once."""

    async def start_serving(self) -> None:
        """Serving starts with the site; nothing to do."""

    async def serve_forever(self) -> None:
        raise NotImplementedError("the gateway's serve() runs the loop")


class AcceptingSite(web.BaseSite):
    """A TCP site like aiohttp's ``TCPSite``, accepting in batches (module doc)."""

    __slots__ = ("_handlers", "_host", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        backlog: int,
        reuse_port: bool = False,
        server: web.Server | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        # The connections' request handlers: the runner's, or another (health_port).
        self._handlers = server

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the kernel's pick for 0)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(
            self._host or None,
            self._port,
            type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE,
        )
        socks: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self._reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self._backlog)
                sock.setblocking(False)
        except OSError:
            for sock in socks:
                sock.close()
            raise
        listeners = _Listeners(loop, socks)
        self._server = listeners
        server = self._handlers or self._runner.server
        assert server is not None
        reads = _Reads()

        def factory() -> HeadFirst:
            return HeadFirst(server(), reads)

        for sock in socks:
            loop.add_reader(sock.fileno(), _accept, loop, sock, factory, listeners)


def _accept(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    factory: Any,
    listeners: _Listeners,
) -> None:
    for _ in range(ACCEPT_BATCH):
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in _TRANSIENT:
                continue
            # EMFILE, ENFILE, ENOBUFS, ENOMEM: the clients wait in the queue.
            log.warning(
                "cannot accept connections; retrying in %g s",
                _RETRY_S,
                extra={"fields": {"error": exc.strerror}},
            )
            loop.remove_reader(sock.fileno())
            loop.call_later(_RETRY_S, _resume, loop, sock, factory, listeners)
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _connect(loop, conn, factory)


def _resume(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    factory: Any,
    listeners: _Listeners,
) -> None:
    if listeners.is_serving():
        loop.add_reader(sock.fileno(), _accept, loop, sock, factory, listeners)


def _connect(
    loop: asyncio.AbstractEventLoop, conn: socket.socket, factory: Any
) -> None:
    """Make ``conn``'s transport now, in the turn that accepted it.

    ``connect_accepted_socket`` is a coroutine that makes the transport, then waits
    for its ``connection_made``. A task per connection ran it a turn later at ~30 us
    more a connection; its steps are run here instead, each after the future the
    last one waits for (as a task would)."""
    _step(conn, loop.connect_accepted_socket(factory, conn))


def _step(
    conn: socket.socket, coro: Coroutine[Any, Any, Any], _: object = None
) -> None:
    try:
        waiting = coro.send(None)
    except StopIteration:
        return
    except (OSError, asyncio.CancelledError):  # the client left, or the loop closes
        conn.close()
        return
    except Exception:  # one connection's failure ends it, not the accepts after it
        conn.close()
        log.exception("cannot set up a connection")
        return
    waiting._asyncio_future_blocking = False  # taken, as a task takes it
    waiting.add_done_callback(functools.partial(_step, conn, coro))
