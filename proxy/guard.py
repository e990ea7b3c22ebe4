"""The gateway's admission middleware for the API routes, inside ``observe``.

Order: draining, backpressure, client key, the key's limits; then the handler; then the
key's concurrency slot is released and, for a budgeted key, the request's budget hold
(``proxy.budget``) settled: its reservations given back, what it cost added. The model
check (403) happens in the handler once the body names the model (``authorize``).
``observe`` renders and counts every refusal (``imagegate_rejected_requests``) and
labels the request's metrics and log line with the key's name (``ctx.key``).
"""

from __future__ import annotations

import uuid

from aiohttp import web

from proxy.budget import HOLD, Hold
from proxy.context import CURRENT
from proxy.controls import ClientKey
from proxy.errors import Overloaded
from proxy.limits import refusal_error
from proxy.middleware import Handler
from proxy.parsing import media_type
from proxy.state import GATEWAY, Gateway


def _guarded(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.startswith(("/v1/", "/v3/"))


def _temp_reservation(request: web.Request, gateway: Gateway) -> int:
    if media_type(request) != "multipart/form-data":
        return 0  # JSON bodies are held in memory, capped by max_json_bytes
    cap = gateway.config.limits.body_cap
    declared = request.content_length
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        return cap  # a compressed length says nothing of what lands on disk
    return cap if declared is None else min(declared, cap)


def authorize(gateway: Gateway, model: str) -> None:
    """403 unless the request's key may use ``model`` ("provider/model")."""
    ctx = CURRENT.get()
    if gateway.keys and ctx is not None:
        gateway.keys.check_model(ctx.key, model)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _guarded(request):
        return await handler(request)
    gateway = request.app[GATEWAY]
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
            return await handler(request)
        lease = uuid.uuid4().hex
        refusal = await gateway.limits.admit(name, rule, lease)
        if refusal is not None:
            raise refusal_error(name, rule, refusal)
        hold = None
        if rule.budget_usd_day is not None or rule.budget_usd_month is not None:
            hold = Hold(
                gateway.limits, name, rule, gateway.prices,
                gateway.config.limits.unpriced_image_usd,
            )  # fmt: skip
        HOLD.set(hold)
        try:
            return await handler(request)
        finally:
            await gateway.limits.release(name, rule, lease)
            if hold is not None:
                # Failed requests too: their reservations go back, their charges stay.
                await hold.settle()


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
