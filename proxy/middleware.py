"""Request id, error rendering, request metrics and the access log, in one middleware.

Renders and counts every ``ProxyError`` raised before a response started (its
envelope from ``proxy.redact.envelope``, which the stream relay uses for errors after
the start); aiohttp's own 404/405 and any other exception (logged with its traceback,
answered as a bare 500 carrying the request id) leave through the same envelope.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.config import Server
from proxy.context import CONTEXT, CURRENT, RequestContext
from proxy.errors import ProxyError, RequestError
from proxy.logs import log_access
from proxy.metrics import Metrics
from proxy.redact import Redactor, envelope, error_headers
from proxy.state import resources
from proxy.tracing import start_trace

log = logging.getLogger("imagegate")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
# Status 499: the client went away before an answer (nginx's convention).
_CLIENT_CLOSED = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def render(exc: ProxyError, redactor: Redactor) -> web.Response:
    resp = web.Response(
        status=exc.status,
        body=envelope(exc, redactor),
        content_type="application/json",
        headers=error_headers(exc, redactor),
    )
    if not exc.retryable:
        # The OpenAI SDKs honour this before their own status-based retry rule.
        resp.headers["x-should-retry"] = "false"
    return resp


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _http_error(exc: web.HTTPException, redactor: Redactor) -> web.Response:
    # aiohttp's own 404/405, put in the tree so that they leave by the same door.
    error = RequestError(exc.reason, code=_HTTP_CODES.get(exc.status))
    error.status = exc.status
    resp = render(error, redactor)
    if "Allow" in exc.headers:
        resp.headers["Allow"] = exc.headers["Allow"]
    return resp


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    res = resources(request.app)
    metrics, redactor = res.metrics, res.redactor
    incoming = request.headers.get("X-Request-ID", "")
    # 128 random bits as hex, like uuid4().hex, at a third of its cost.
    request_id = (
        incoming if incoming and _REQUEST_ID.match(incoming) else os.urandom(16).hex()
    )
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    trace = start_trace(
        request.headers.get("traceparent"), request.headers.get("tracestate")
    )
    ctx = RequestContext(request_id=request_id, route=route, trace=trace)
    request[CONTEXT] = ctx
    CURRENT.set(ctx)  # for Upstream, inside the adapters (proxy.context)
    start = time.perf_counter()
    status = 500
    # Probes and scrapes are not work: they stay out of the saturation gauge.
    inflight = metrics.inflight_add if route not in _QUIET_ROUTES else None
    if inflight is not None:
        inflight(1)
    try:
        try:
            resp = await handler(request)
        except ProxyError as exc:
            ctx.error_code = redactor.text(exc.log_code)
            ctx.error_param = redactor.text(exc.param)
            metrics.record_error(exc)
            resp = render(exc, redactor)
        except web.HTTPException as exc:
            resp = _http_error(exc, redactor)
            ctx.error_code = _HTTP_CODES.get(exc.status)
        except asyncio.CancelledError:
            status = _CLIENT_CLOSED
            raise
        except ConnectionResetError as exc:
            if request.transport is not None and not request.transport.is_closing():
                raise
            # The client left mid-request (its body cut short). The exception's frames
            # hold the request's buffers and temp files, and aiohttp's read waiter
            # holds the exception: a reference cycle that only a GC pass would free.
            # Answered rather than re-raised, and its traceback dropped, they are
            # freed at once.
            exc.__traceback__ = None
            ctx.client_closed = True
            resp = web.Response(status=_CLIENT_CLOSED)
        except Exception:
            log.exception(
                "unhandled error", extra={"fields": {"request_id": request_id}}
            )
            ctx.error_code = "internal_error"
            internal = ProxyError(
                f"internal error; request id {request_id}", code="internal_error"
            )
            resp = render(internal, redactor)
        status = _CLIENT_CLOSED if ctx.client_closed else resp.status
        if not resp.prepared:
            resp.headers["X-Request-ID"] = request_id
            if request.content.exception() is not None:
                # The body broke mid-way (undecodable): aiohttp drops the connection
                # after answering, so say so, or the client reuses it and fails.
                resp.force_close()
        # Sent here rather than by aiohttp after the middleware returns, so that the
        # metrics and the access line below are off the response's path (aiohttp's
        # own prepare and write_eof then find the work done).
        try:
            await resp.prepare(request)
            await resp.write_eof()
        except ConnectionError:
            status = _CLIENT_CLOSED
        return resp
    finally:
        if inflight is not None:
            inflight(-1)
        _record(metrics, res.config.server, ctx, status, time.perf_counter() - start)


def _record(
    metrics: Metrics, server: Server, ctx: RequestContext, status: int, elapsed: float
) -> None:
    provider = ctx.provider or "none"
    code_class = f"{status // 100}xx"
    metrics.add(metrics.requests, ctx.route, provider, code_class, ctx.key)(1)
    overhead = max(elapsed - ctx.upstream_s, 0.0)
    # Probes and scrapes are counted and logged like any request (an operator
    # filters on `route`) but kept out of the latency histograms.
    if ctx.route not in _QUIET_ROUTES:
        metrics.observe(metrics.request_duration, ctx.route)(elapsed)
        metrics.observe(metrics.overhead, ctx.route)(overhead)
    if server.access_log:
        fields = {
            "request_id": ctx.request_id,
            "trace_id": ctx.trace.trace_id if ctx.trace else None,
            "route": ctx.route,
            "status": status,
            "key": ctx.key,
            "provider": ctx.provider,
            "model": ctx.model,
            # Whole microseconds, as round(seconds, 6) gives them but for a last
            # digit at an exact half: round() with digits formats the float, ~3,500
            # instructions a call.
            "duration_s": round(elapsed * 1_000_000) / 1_000_000,
            "upstream_s": round(ctx.upstream_s * 1_000_000) / 1_000_000,
            "overhead_s": round(overhead * 1_000_000) / 1_000_000,
            "cost_usd": ctx.cost,
            "images": ctx.images,
            "error": ctx.error_code,
            "param": ctx.error_param,
        }
        if server.log_prompts:
            fields["prompt"] = ctx.prompt
        log_access(fields)
