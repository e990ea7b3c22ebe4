"""A provider's JSON reply relayed to the client as it arrives (issue 19).

An OpenAI-shaped reply (OpenAI, Azure, xAI: ``RelayingAdapter``) is not held whole to
splice ``cost`` into it: its status decides retries and fallbacks as before, then its
body goes on piece by piece through ``proxy.reply_scan`` (which keeps only ``usage``
and counts the images) and a ``RedactingStream`` (which holds back the tail a secret
split between two pieces could hide in), and ``provider`` and ``cost`` end it. A reply
that says it is at most ``HELD`` bytes is read whole and answered like any other.

**Which answers are relayed** is decided here and nowhere else:

- per request (``wanted``): not when the answer must be kept (result links, an
  idempotency key's stored reply, an async job's result: the caller says ``keep``),
  nor for ``stream: true`` (completed events are made from the whole result);
- per route (``Relay.takes``): the adapter relays, the job is one call (not ``n``
  calls merged), and the model's price does not need the output images' sizes
  (a per-megapixel price measures every image's header).

Once the first byte is sent the status is 200: a reply that breaks off or is not
JSON of that shape after that is counted and logged as the provider's error and the
connection is cut, so the client never takes a truncated body for a whole one. A
client that leaves closes the upstream connection; the budget is charged the call's
worst case (the provider finishes and bills it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple, cast

import msgspec
from aiohttp import web

from proxy.accounting import bill
from proxy.budget import Hold
from proxy.context import RequestContext
from proxy.errors import ProxyError, UpstreamProtocolError
from proxy.metrics import Metrics
from proxy.models import EditJob, EditResult
from proxy.pricing import PriceTable
from proxy.providers.base import RelayingAdapter
from proxy.redact import Redactor
from proxy.reply_scan import ReplyScanner
from proxy.routing import Route
from proxy.turns import StartGate
from proxy.upstream_reply import UpstreamStream

# A reply that says it is at most this long is read whole (it costs less to answer
# with a Content-Length than to relay); a longer or unsized one is relayed.
HELD = 64 * 1024
_encode = msgspec.json.encode


def wanted(job: EditJob, *, keep: bool) -> bool:
    """Whether this request's answer may be relayed as it arrives (the module doc)."""
    return not keep and not job.stream


# A Struct: made per request (msgspec's __init__ is C).
class Relay(msgspec.Struct):
    """A request whose answer may be relayed, and the reply it opened (closed by
    ``close`` when the request ends)."""

    prices: PriceTable
    opened: UpstreamStream | None = None

    def takes(self, route: Route, *, fan_out: bool) -> bool:
        """Whether ``route`` may relay this request's answer (the module doc)."""
        # An attribute, not isinstance on a runtime Protocol: that costs microseconds.
        if fan_out or getattr(route.adapter, "open", None) is None:
            return False
        catalogue = self.prices.catalogue
        row = None if catalogue is None else catalogue.get(route.price_key)
        return row is None or row.price is None or row.price.per_megapixel is None

    async def open(
        self, route: Route, job: EditJob, hold: Hold | None
    ) -> EditResult | Relayed:
        """The call made: its result if the reply was short, else the open reply.
        A short result is charged here, a relayed reply when it ends."""
        adapter = cast(RelayingAdapter, route.adapter)
        try:
            got = await adapter.open(job, route.upstream, held=HELD)
        except asyncio.CancelledError:
            if hold is not None:
                hold.charge_worst(route, job)
            raise
        if isinstance(got, EditResult):
            if hold is not None:
                hold.charge(route, job, got)
            return got
        self.opened = got
        return Relayed(got, job)

    async def close(self) -> None:
        if self.opened is not None:
            await self.opened.close()


class Relayed(NamedTuple):
    """An open 2xx reply to relay, and the job it answers."""

    reply: UpstreamStream
    job: EditJob


class Relaying(msgspec.Struct, frozen=True):
    """What relaying one reply uses: the app's resources and the request's own."""

    metrics: Metrics
    prices: PriceTable
    redactor: Redactor
    ctx: RequestContext
    hold: Hold | None
    relays: StartGate  # per-turn passes for a reply's pieces (``Pressure.relays``)


async def relay(
    request: web.Request, using: Relaying, route: Route, relayed: Relayed
) -> web.StreamResponse:
    """Send ``relayed`` on as it arrives; ``provider`` and ``cost`` at its end."""
    reply, job = relayed
    ctx, hold = using.ctx, using.hold
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.headers["X-Request-ID"] = ctx.request_id
    scanner = ReplyScanner()
    charged = False
    try:
        redacting = using.redactor.stream()
        async for piece in _pieces(reply, scanner, using.relays):
            out = redacting.feed(piece)
            if out:
                if not resp.prepared:
                    await resp.prepare(request)
                await resp.write(out)
        result = EditResult(body=b"", images=scanner.images, usage=scanner.usage)
        if hold is not None:
            hold.charge(route, job, result)
        charged = True
        cost = bill(using.metrics, using.prices, ctx, route, result, job)
        members = b',"provider":' + _encode(route.provider)
        end = redacting.flush() + members + b',"cost":' + _encode(cost) + b"}"
        if not resp.prepared:
            await resp.prepare(request)
        await resp.write(end)
        await resp.write_eof()
    except ProxyError as exc:
        if not resp.prepared:
            raise  # the middleware answers with the error
        # Past the first byte: counted and logged here, and the connection cut.
        ctx.error_code = using.redactor.text(exc.log_code)
        using.metrics.record_error(exc)
        if request.transport is not None:
            request.transport.abort()
    except ConnectionResetError:
        ctx.client_closed = True
    finally:
        if not charged and hold is not None:
            # Given up after it was sent: the provider finishes and bills it.
            hold.charge_worst(route, job)
    return resp


async def _pieces(
    reply: UpstreamStream, scanner: ReplyScanner, turns: StartGate
) -> AsyncIterator[bytes]:
    """The reply through the scanner, capped; a broken or malformed one as a 502.
    Each piece takes one of ``turns`` (``Pressure.relays``) before it is handled."""
    size, cap = 0, reply.cap
    if (reply.length or 0) > cap:
        raise _malformed(reply, f"a reply over {cap} bytes", "too_large")
    async for chunk in reply.chunks():
        size += len(chunk)
        if size > cap:
            raise _malformed(reply, f"a reply over {cap} bytes", "too_large")
        if turns.open:
            turns.take()
        else:
            await reply.wait_turn(turns)
        try:
            yield scanner.feed(chunk)
        except ValueError as exc:
            raise _malformed(reply, str(exc), "protocol_error") from None
    try:
        scanner.close()
    except ValueError as exc:
        raise _malformed(reply, str(exc), "protocol_error") from None


def _malformed(reply: UpstreamStream, what: str, code: str) -> UpstreamProtocolError:
    # A reply over the cap is cut off (an error); a malformed one was valid HTTP.
    reply.settle("error" if code == "too_large" else f"{reply.status // 100}xx")
    if code == "too_large":
        message, code = f"sent {what}", "upstream_reply_too_large"
    else:
        message, code = f"sent an unexpected reply ({what})", "upstream_protocol_error"
    return UpstreamProtocolError(
        f"provider '{reply.provider}' {message}", provider=reply.provider, code=code
    )
