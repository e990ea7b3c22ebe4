"""Per-request accounting carried in a ContextVar.

aiohttp runs each request in its own task, so a ContextVar set by the middleware is seen
by everything that request awaits (adapters, ``Upstream``) without threading it through
every signature.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from proxy.tracing import Trace

# The ``key`` label and log field of a request without a client key.
ANONYMOUS = "anonymous"


@dataclass(slots=True)
class RequestContext:
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
