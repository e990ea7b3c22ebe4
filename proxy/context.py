"""The per-request context: what the request's modules hand each other, for its
metrics and access log.

``observe`` creates it and puts it on the request (``request[CONTEXT]``); the web
layer (middlewares, handlers, the stream relay, accounting) reads and writes it there
and passes what the layers below need explicitly. It is also left in a ContextVar
(``CURRENT``) for the one place that cannot be handed it: ``Upstream``, called inside
provider adapters whose ``edit(job, upstream)`` carries no request, adds its time
(``add_upstream_time``) and takes the trace headers (``trace_headers``) from there.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from proxy.tracing import Trace

if TYPE_CHECKING:
    from proxy.budget import Hold

# The ``key`` label and log field of a request without a client key.
ANONYMOUS = "anonymous"


# A Struct, not a dataclass: made per request, its __init__ is msgspec's C one.
class RequestContext(msgspec.Struct):
    request_id: str
    route: str
    trace: Trace | None = None
    key: str = ANONYMOUS  # the client key's configured name, never the key itself
    provider: str | None = None
    model: str | None = None  # as the client sent it (logged; a bounded string)
    model_label: str = "other"  # the metrics label: a priced model, else "other"
    error_param: str | None = None
    prompt: str | None = None  # logged only when server.log_prompts is on
    upstream_s: float = 0.0
    cost: float | None = None
    images: int = 0
    error_code: str | None = None
    # A streamed reply was cut short by the client (recorded as 499).
    client_closed: bool = False
    # A budgeted key's hold (proxy.budget), opened and settled by the guard.
    hold: Hold | None = None
    # Headers every answer to this request carries (model lifecycle: Deprecation,
    # Sunset, the remap notice), error answers included.
    headers: dict[str, str] = msgspec.field(default_factory=dict)


CONTEXT = web.RequestKey("context", RequestContext)


CURRENT: ContextVar[RequestContext | None] = ContextVar(
    "imagegate_request", default=None
)


def add_upstream_time(seconds: float) -> None:
    ctx = CURRENT.get()
    if ctx is not None:
        ctx.upstream_s += seconds


def trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) for an upstream call of this request."""
    ctx = CURRENT.get()
    if ctx is None or ctx.trace is None:
        return {}
    return ctx.trace.child()
