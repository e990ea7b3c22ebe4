"""The outermost middleware: how many requests start per turn of the event loop, and
the unread body of an answered request discarded in body turns.

Until a request reads its body (``bodystream.request_body``), or its answer is out,
only its head was read from its connection (``proxy.listener.HeadFirst``).

A burst's heads arrive together: 1,000 uploads read in one turn of the loop, and each
request's first step (middleware, key, handler, its first body chunks) is a few
hundred microseconds of CPU, so that turn took 0.4 s and ``/healthz`` and the 503s
waited behind it (issue 19). ``Pressure.starts`` (``backpressure.StartGate``) lets
``STARTS_PER_TURN`` requests start per turn and queues the rest in arrival order;
each queued one costs a future. The probes (``/healthz``, ``/readyz``, ``/metrics``)
never wait. A request that will be refused for ``max_inflight`` (or while draining)
does not queue either: the requests queued count as in flight (``Pressure.waiting``),
so the refusal is decided at its head and answered in the turn it arrived. A
refusal for the client's share or the byte budgets still waits its turn: those need
its key, or its body.

After the answer, a body left unread (a refusal's, or a client error's) is discarded
here, through the body turns (``Pressure.readers``, as ``BodyStream``) for at most
``LINGER_S``, so the client that sends all its body before reading still reads the
answer. aiohttp's own lingering read every such socket on every turn of the loop:
500 refused 1 MiB uploads made turns of 1.2 s of CPU.
"""

from __future__ import annotations

from aiohttp import web

from proxy.backpressure import Pressure
from proxy.bodystream import BodyStream, Pace
from proxy.errors import ProxyError
from proxy.listener import release
from proxy.middleware import Handler
from proxy.state import CONFIG, LIFECYCLE, PRESSURE

# As aiohttp's lingering_time: how long an answered request's body is still read.
LINGER_S = 10.0
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


@web.middleware
async def admission(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if request.path in _PROBES:
            return await handler(request)
        app = request.app
        pressure = app[PRESSURE]
        gate = pressure.starts
        if app[LIFECYCLE].draining or not pressure.room():
            resp = await handler(request)  # refused at its head (guard)
        elif gate.open:
            gate.take()
            resp = await handler(request)
        else:
            resp = await _queued(request, handler, pressure)
        content = request.content
        if not content.is_eof() and content.exception() is None:
            await _linger(request)
        return resp
    finally:
        # A body never read, or the next request on this connection: read on.
        release(request.transport)


def probes_only(handle: Handler) -> Handler:
    """The request handler of ``server.health_port``'s connections: the probes go on
    to the app as they do on the main port (this middleware, the access line, the
    metrics); any other path is a 404 there, its connection read on."""

    async def probes(request: web.Request) -> web.StreamResponse:
        if request.path in _PROBES:
            return await handle(request)
        release(request.transport)
        raise web.HTTPNotFound()

    return probes


async def _queued(
    request: web.Request, handler: Handler, pressure: Pressure
) -> web.StreamResponse:
    # Counted in flight while queued, so a request behind it is refused at once.
    # Woken, it reaches the guard's admission in the same step of its task: no
    # other request can take its place in between.
    pressure.waiting += 1
    try:
        await pressure.starts.wait()
    finally:
        pressure.waiting -= 1
    return await handler(request)


async def _linger(request: web.Request) -> None:
    """Discard what is left of an answered request's body (module doc)."""
    content = request.content
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    app = request.app
    readers = app[PRESSURE].readers
    async with readers:
        # Its socket reads again once a turn is free: 500 refusals released at once
        # were 500 reads of 256 KiB in one turn.
        release(transport)
    pace = Pace(grace_s=LINGER_S, min_rate=1, deadline_s=LINGER_S, turn=readers)
    cap = app[CONFIG].limits.body_cap
    try:
        async with BodyStream(content, LINGER_S, cap, pace=pace) as body:
            while await body.read():
                pass
    except (ProxyError, ConnectionError):
        pass
    if not content.is_eof():
        # Past the linger: aiohttp would linger again; the connection ends instead.
        request.protocol.force_close()
