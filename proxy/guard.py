"""The gateway's admission middleware for the API routes, inside ``observe``.

Order: draining, backpressure, client key, the key's limits; then the handler; then the
key's concurrency slot is released and the priced cost added to its spend. The model
check (403) happens in the handler once the body names the model (``authorize``).
Refusals are counted in ``imagegate_rejected_requests`` by reason.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from proxy.context import CURRENT
from proxy.controls import ClientKey
from proxy.errors import Overloaded, ProxyError
from proxy.limits import refusal_error
from proxy.middleware import Handler
from proxy.state import GATEWAY, Gateway

ANONYMOUS = "anonymous"
# Error codes that are the gateway's own refusals, and the metric reason for each.
_REASONS = {
    "missing_api_key": "unauthorized",
    "invalid_api_key": "unauthorized",
    "model_not_allowed": "forbidden",
    "budget_exceeded": "budget",
    "rate_limit_exceeded": "rpm",
    "concurrency_limit_exceeded": "concurrency",
    "limits_unavailable": "limits_unavailable",
    "overloaded": "overloaded",
    "shutting_down": "shutting_down",
}


def _guarded(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.startswith(("/v1/", "/v3/"))


def _temp_reservation(request: web.Request, gateway: Gateway) -> int:
    if request.content_type != "multipart/form-data":
        return 0  # JSON bodies are held in memory, capped by max_json_bytes
    cap = gateway.config.limits.body_cap
    declared = request.content_length
    return cap if declared is None else min(declared, cap)


def authorize(gateway: Gateway, model: str) -> None:
    """403 unless the request's key may use ``model`` ("provider/model")."""
    ctx = CURRENT.get()
    if ctx is not None and ctx.key is not None:
        gateway.keys.check_model(ctx.key, model)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _guarded(request):
        return await handler(request)
    gateway = request.app[GATEWAY]
    ctx = CURRENT.get()
    status = 500
    try:
        resp = await _admit_and_handle(request, handler, gateway)
        status = resp.status
        return resp
    except ProxyError as exc:
        status = exc.http_status
        reason = _REASONS.get(exc.code or "")
        if reason is not None:
            gateway.metrics.rejected.labels(reason).inc()
        raise
    except asyncio.CancelledError:
        status = 499  # cancelled: shutdown grace expired (observe's convention)
        raise
    finally:
        key = ctx.key if ctx is not None and ctx.key is not None else ANONYMOUS
        gateway.metrics.key_requests.labels(key, f"{status // 100}xx").inc()


async def _admit_and_handle(
    request: web.Request, handler: Handler, gateway: Gateway
) -> web.StreamResponse:
    if gateway.draining:
        raise Overloaded(
            "the gateway is shutting down; retry on another instance",
            code="shutting_down",
            headers={"Connection": "close", "Retry-After": "1"},
        )
    with gateway.pressure.admit(_temp_reservation(request, gateway)):
        if not gateway.keys:
            return await handler(request)
        name = gateway.keys.authenticate(request.headers)
        ctx = CURRENT.get()
        if ctx is not None:
            ctx.key = name
        rule = gateway.keys[name]
        if not _limited(rule):
            resp = await handler(request)
        else:
            lease = uuid.uuid4().hex
            refusal = await gateway.limits.admit(name, rule, lease)
            if refusal is not None:
                raise refusal_error(name, rule, refusal)
            try:
                resp = await handler(request)
            finally:
                await gateway.limits.release(name, rule, lease)
        cost = ctx.cost if ctx is not None else None
        if cost:
            gateway.metrics.key_cost.labels(name).inc(cost)
            if rule.budget_usd_day is not None or rule.budget_usd_month is not None:
                await gateway.limits.add_spend(name, cost)
        return resp


def _limited(rule: ClientKey) -> bool:
    return any(
        v is not None
        for v in (
            rule.rpm,
            rule.concurrency,
            rule.budget_usd_day,
            rule.budget_usd_month,
        )
    )
