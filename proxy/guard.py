"""The gateway's admission middleware for the API routes, inside ``observe``; without
client keys it first runs the Host and browser-origin checks (``proxy.origins``) of
every route but the probes.

Order: draining, backpressure, client key, the client's share of the slots in flight
(``Slot.claim``), the key's quotas, then ``100 Continue`` for a client waiting for it
(only now, and only for a declared length within the cap); then
the handler, its body read at the pace set here and its bytes reserved as they arrive;
then the key's concurrency slot is released and, for a budgeted key, the request's
budget hold (``proxy.budget``, on the request context) settled: its reservations
given back, what it cost added.
The model check (403) happens in the handler once the body names the model
(``authorize``).
``observe`` renders and counts every refusal (``imagegate_rejected_requests``) and
labels the request's metrics and log line with the key's name (``ctx.key``).
"""

from __future__ import annotations

import uuid

from aiohttp import HttpVersion11, hdrs, web

from proxy.backpressure import Pressure, Slot
from proxy.bodystream import PACE, Pace, too_large
from proxy.budget import Hold
from proxy.client_keys import KeyRing
from proxy.config import Limits
from proxy.context import CONTEXT, RequestContext
from proxy.controls import ClientKey
from proxy.errors import Overloaded, ProxyError
from proxy.jobs.prefer import uncounted
from proxy.middleware import Handler
from proxy.origins import ORIGINS, check_request
from proxy.parsing import media_type
from proxy.quotas import refusal_error
from proxy.state import QUOTAS, resources

# Set once ``100 Continue`` went out: the client then sends its body.
_CONTINUED = web.RequestKey("continued", bool)


def _guarded(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.startswith(("/v1/", "/v3/"))


def _pace(request: web.Request, limits: Limits, slot: Slot, pressure: Pressure) -> Pace:
    # Multipart bytes go to the temp budget; any other body (JSON) is held in memory
    # and reserved from the JSON memory budget as it arrives.
    multipart = media_type(request) == "multipart/form-data"
    return Pace(
        grace_s=limits.client_body_grace_s,
        min_rate=limits.client_min_body_rate_bytes_s,
        deadline_s=limits.client_body_timeout_s,
        reserve=slot if multipart else slot.json,
        turn=pressure.readers,
    )


def authorize(keys: KeyRing, ctx: RequestContext, model: str) -> None:
    """403 unless the request's key may use ``model`` ("provider/model")."""
    if keys:
        keys.check_model(ctx.key, model)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    app = request.app
    res = resources(app)
    origins = app.get(ORIGINS)
    if origins is not None:
        check_request(origins, request)  # keyless mode (proxy.origins), any route
    if not _guarded(request):
        return await handler(request)
    # The admission is inline rather than a coroutine of its own: a frame less
    # that every step of the request's task would pass through.
    try:
        limits, keys, pressure = res.config.limits, res.keys, res.pressure
        if res.lifecycle.draining:
            raise Overloaded(
                "the gateway is shutting down; retry on another instance",
                code="shutting_down",
                headers={"Connection": "close", "Retry-After": "1"},
            )
        with pressure.admit() as slot:
            request[PACE] = _pace(request, limits, slot, pressure)
            if not keys:
                # Without keys a client is known by its address (behind a proxy, all
                # clients share one: see backpressure.max_temp_share,
                # max_inflight_share).
                slot.claim(f"address {request.remote}")
                if request.headers.get(hdrs.EXPECT) is not None:
                    await _continue(request, limits)
                return await handler(request)
            name = keys.authenticate(request.headers)
            ctx = request[CONTEXT]
            ctx.key = name  # a refusal below is labelled with the key
            # Only now is the client known: a refused key never claims a share.
            slot.claim(f"key {name}")
            rule = keys[name]
            if not limited(rule) or uncounted(request):
                await _continue(request, limits)
                return await handler(request)
            quotas = app[QUOTAS]
            lease = uuid.uuid4().hex
            refusal = await quotas.admit(name, rule, lease)
            if refusal is not None:
                raise refusal_error(name, rule, refusal)
            try:
                await _continue(request, limits)
            except BaseException:
                await quotas.release(name, rule, lease)
                raise
            hold = None
            if rule.budget_usd_day is not None or rule.budget_usd_month is not None:
                hold = Hold(quotas, name, rule, res.prices, limits.unpriced_image_usd)
            ctx.hold = hold
            try:
                return await handler(request)
            finally:
                await quotas.release(name, rule, lease)
                if hold is not None:
                    # Failed requests too: their reservations go back, their
                    # charges stay.
                    await hold.settle()
    except ProxyError as exc:
        if _expects_continue(request) and not request.get(_CONTINUED, False):
            # Refused before 100 Continue: the body never comes, so the connection
            # cannot carry another request (aiohttp closes it once answered).
            exc.headers["Connection"] = "close"
        raise


async def defer_continue(request: web.Request) -> None:
    """The ``expect_handler`` of the API's POST routes: it sends nothing.

    aiohttp's default answers ``100 Continue`` before any middleware runs, inviting
    the body of a request that is then refused. ``guard`` sends it once the request
    is admitted (``_continue``); any other expectation is refused as aiohttp does.
    """
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11 and expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect[:64]}")


def _expects_continue(request: web.Request) -> bool:
    expect = request.headers.get(hdrs.EXPECT)
    return (
        expect is not None
        and request.version == HttpVersion11
        and expect.lower() == "100-continue"
    )


async def _continue(request: web.Request, limits: Limits) -> None:
    """``100 Continue``, when the client waits for it: after the key, the quotas and
    backpressure let the request in, and only for a declared length within the cap."""
    if not _expects_continue(request):
        return
    multipart = media_type(request) == "multipart/form-data"
    cap = limits.body_cap if multipart else limits.max_json_bytes
    length = request.content_length
    if length is not None and length > cap:
        # The body never comes: the connection cannot carry another request.
        raise too_large("request body", cap)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # The interim answer is not part of the response's size (as aiohttp does).
    request.writer.output_size = 0
    request[_CONTINUED] = True


def limited(rule: ClientKey) -> bool:
    return any(
        v is not None
        for v in (
            rule.rpm,
            rule.concurrency,
            rule.budget_usd_day,
            rule.budget_usd_month,
        )
    )
