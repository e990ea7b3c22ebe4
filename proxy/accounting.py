"""Pricing and accounting of an answered request: the one place for JSON answers,
completed events made from a JSON answer, and relayed streams.

Prices the answer from the provider's usage (unless the adapter knew its cost), counts
it in the metrics, and leaves cost and images on the request context for the access
log.
"""

from __future__ import annotations

from proxy.catalogue.cost import Facts, cost, usd
from proxy.catalogue.measure import reply_cost
from proxy.context import RequestContext
from proxy.metrics import Metrics
from proxy.models import EditJob, EditResult, Usage
from proxy.pricing import PriceTable
from proxy.routing import Route


def price(
    prices: PriceTable,
    route: Route,
    *,
    usage: Usage | None,
    images: int,
    job: EditJob | None = None,
    result: EditResult | None = None,
) -> float | None:
    """The request's cost from the catalogue row in the provider's billing shape;
    without the job (a relayed stream's completed event), from its usage and image
    count alone."""
    row = None if prices.catalogue is None else prices.catalogue.get(route.price_key)
    if row is None or row.price is None:
        return None
    if job is None or result is None:
        total = cost(row.price, Facts(images=images, usage=usage))
        return None if total is None else usd(total)
    total = reply_cost(row, job, result)
    return None if total is None else usd(total)


def account(
    metrics: Metrics,
    ctx: RequestContext,
    route: Route,
    cost: float | None,
    images: int,
    *,
    usage: Usage | None = None,
) -> None:
    metrics.record_result(
        route.provider,
        ctx.model_label,
        ctx.key,
        cost=cost,
        usage=usage,
        images=images,
    )
    ctx.cost = cost
    ctx.images = images


def bill(
    metrics: Metrics,
    prices: PriceTable,
    ctx: RequestContext,
    route: Route,
    result: EditResult,
    job: EditJob | None = None,
) -> float | None:
    """Price and account a whole result; its cost, for the answer."""
    spent = _cost(prices, route, result, job)
    account(metrics, ctx, route, spent, result.images, usage=result.usage)
    return spent


def _cost(
    prices: PriceTable, route: Route, result: EditResult, job: EditJob | None
) -> float | None:
    """What the adapter knew the result cost, else its price from the catalogue."""
    if result.cost is not None:
        return result.cost
    return price(
        prices, route, usage=result.usage, images=result.images, job=job,
        result=result,
    )  # fmt: skip


def bill_answered(
    metrics: Metrics,
    prices: PriceTable,
    ctx: RequestContext,
    answered: list[tuple[Route, EditJob, EditResult]],
) -> None:
    """Price and count the calls that answered within a request that failed: their
    cost goes on the access line and the cost counter; no image was returned."""
    total: float | None = None
    for route, job, result in answered:
        spent = _cost(prices, route, result, job)
        metrics.record_result(
            route.provider, ctx.model_label, ctx.key, cost=spent, usage=result.usage,
            images=0,
        )  # fmt: skip
        if spent is not None:
            total = round((total or 0.0) + spent, 8)
    ctx.cost = total


def splice(body: bytes, extra: bytes) -> bytes:
    """Append ``"k":v`` members to an encoded JSON object without decoding it.

    One copy of the (often megabytes of base64) body: slicing and ``+`` made four.
    """
    end, sep = _end(body)
    return b"".join((memoryview(body)[:end], sep, extra, b"}"))


def splice_parts(body: bytes, extra: bytes) -> tuple[memoryview, bytes]:
    """``splice``'s answer as two pieces, the body's part a view (no copy): a large
    answer is written piece by piece (``proxy.held``)."""
    end, sep = _end(body)
    return memoryview(body)[:end], sep + extra + b"}"


def _end(body: bytes) -> tuple[int, bytes]:
    """Where the object's members end (before its closing brace and any space), and
    the separator the next member needs there."""
    close = body.rindex(b"}")
    assert not body[close + 1 :].strip()
    last = close - 1
    while last >= 0 and body[last] in b" \t\r\n":
        last -= 1
    return last + 1, b"" if body[last : last + 1] == b"{" else b","
