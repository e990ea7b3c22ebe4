"""``stream: true``: server-sent events to the client.

For a provider that streams, its events are relayed one by one as they arrive (never
the whole stream buffered); partial images pass through byte for byte but for any
provider secret in them (``proxy.redact``, as every relayed event), and each
``*.completed`` event gains ``provider`` and ``cost`` computed from its ``usage``. A
failure after the stream started ends it with an ``error`` event carrying OpenAI's
envelope (``proxy.redact.envelope``), which the OpenAI SDK raises as ``APIError``, and
is counted here as the middleware counts errors before the start. A client that goes
away ends the relay, which releases the upstream connection; the request is still
accounted, and a budgeted key is charged the stream's worst case unless it completed
(``proxy.budget``).
For a provider that does not stream, the normal result becomes completed events.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from aiohttp import web

from proxy.accounting import account, price, splice
from proxy.budget import Hold
from proxy.context import RequestContext
from proxy.errors import ProxyError, UpstreamProtocolError, UpstreamUnavailable
from proxy.metrics import Metrics
from proxy.models import EditJob, EditResult, Usage
from proxy.pricing import PriceTable
from proxy.providers.base import StreamingAdapter
from proxy.redact import Redactor, envelope
from proxy.routing import Route
from proxy.sse import Event, SSEDecoder, encode_event, result_events

_encode = msgspec.json.encode
_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class _Head(msgspec.Struct):
    """What the relay needs from an event; the base64 payload is not kept."""

    type: str | None = None
    usage: Usage | None = None
    error: dict[str, Any] | str | None = None


_head_decoder = msgspec.json.Decoder(_Head)


# A Struct: made per request (msgspec's __init__ is C).
class Relaying(msgspec.Struct, frozen=True):
    """What relaying one stream uses: the app's resources and the request's own."""

    metrics: Metrics
    prices: PriceTable
    redactor: Redactor
    max_response_bytes: int
    ctx: RequestContext
    hold: Hold | None


class _Relay:
    def __init__(self, using: Relaying, route: Route) -> None:
        self.using = using
        self.route = route
        self.cost: float | None = None
        self.usage: Usage | None = None
        self.images = 0
        self.partials = 0
        self.ended = False  # a completed or error event was relayed

    def rewrite(self, event: Event) -> bytes:
        """The event to send on: completed events gain provider and cost."""
        redactor = self.using.redactor
        try:
            head = _head_decoder.decode(event.data)
        except msgspec.DecodeError:
            return redactor.data(event.raw) + b"\n\n"
        kind = head.type or event.name or ""
        if head.error is not None:
            self.ended = True
            self.using.ctx.error_code = "upstream_stream_error"
            # The provider failed after the stream started: counted as unavailable.
            errors = self.using.metrics.upstream_errors
            errors.labels(self.route.provider, UpstreamUnavailable.metric_label).inc()
            # The provider's own error text, relayed: it may echo what it was sent.
            return redactor.data(event.raw) + b"\n\n"
        if not kind.endswith(".completed"):
            if kind.endswith(".partial_image"):
                self.partials += 1
            # Any member the provider adds may echo what it was sent.
            return redactor.data(event.raw) + b"\n\n"
        self.ended = True
        self.images += 1
        self.usage = head.usage or self.usage
        cost = price(self.using.prices, self.route, usage=head.usage, images=1)
        if cost is not None:
            self.cost = round((self.cost or 0.0) + cost, 8)
        members = b'"provider":' + _encode(self.route.provider)
        members += b',"cost":' + _encode(cost)
        return encode_event(event.name, splice(redactor.data(event.data), members))


async def relay(
    request: web.Request,
    using: Relaying,
    route: Route,
    job: EditJob,
    adapter: StreamingAdapter,
) -> web.StreamResponse:
    """Relay the provider's event stream; errors before the first byte stay JSON."""
    state = _Relay(using, route)
    decoder = SSEDecoder(using.max_response_bytes)
    resp = web.StreamResponse(headers=_HEADERS)
    ctx = using.ctx
    resp.headers["X-Request-ID"] = ctx.request_id
    # Stays true if the relay is cut short: the client reset the connection, or the
    # handler was cancelled because the client went away.
    abandoned = True
    async with adapter.stream(job, route.upstream) as chunks:
        try:
            await resp.prepare(request)
            async with contextlib.aclosing(chunks):
                await _pump(resp, chunks, decoder, state)
            abandoned = False
        except ConnectionResetError:
            # The client went away; leaving the block closes the upstream connection.
            ctx.client_closed = True
        finally:
            account(
                using.metrics, ctx, route, state.cost, state.images, usage=state.usage
            )
            if using.hold is not None:
                using.hold.charge_stream(
                    route, job, cost=state.cost, images=state.images,
                    partials=state.partials,
                    abandoned=abandoned,
                )  # fmt: skip
    return resp


async def _pump(
    resp: web.StreamResponse,
    chunks: AsyncGenerator[bytes, None],
    decoder: SSEDecoder,
    state: _Relay,
) -> None:
    ctx = state.using.ctx
    redactor = state.using.redactor
    try:
        async for chunk in chunks:
            try:
                events = decoder.feed(chunk)
            except ValueError as exc:
                raise UpstreamProtocolError(
                    f"provider '{state.route.provider}' sent an invalid event stream "
                    f"({exc})",
                    provider=state.route.provider,
                    code="upstream_protocol_error",
                ) from None
            for event in events:
                await resp.write(state.rewrite(event))
        if not state.ended:
            raise UpstreamProtocolError(
                f"provider '{state.route.provider}' ended the stream without a "
                "completed event",
                provider=state.route.provider,
                code="upstream_protocol_error",
            )
    except ProxyError as exc:
        ctx.error_code = redactor.text(exc.log_code)
        ctx.error_param = redactor.text(exc.param)
        # Past the first byte the middleware cannot answer; the error is counted here.
        state.using.metrics.record_error(exc)
        await resp.write(encode_event("error", envelope(exc, redactor)))
    await resp.write_eof()


def completed_events(
    route: Route, job: EditJob, result: EditResult, cost: float | None
) -> web.Response:
    """A provider that does not stream: one completed event per returned image."""
    body: dict[str, Any] = msgspec.json.decode(result.body)
    prefix = "image_edit" if job.operation == "edit" else "image_generation"
    events = result_events(body, prefix)
    if events:
        # Usage and cost cover the whole request: they go on the last event only.
        events[-1].update(provider=route.provider, cost=cost)
    out = b"".join(encode_event(e["type"], _encode(e)) for e in events)
    return web.Response(body=out, headers=_HEADERS)
