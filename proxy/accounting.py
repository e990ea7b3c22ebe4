"""Cost and image accounting for an answered request, shared by JSON and streamed replies.

Computes the cost from the provider's usage (unless the adapter knew it), counts it in
the metrics, and leaves it on the request context for the access log.
"""

from __future__ import annotations

from proxy.context import ANONYMOUS, CURRENT
from proxy.models import Usage
from proxy.routing import Route
from proxy.state import Gateway


def price(
    gateway: Gateway, route: Route, *, usage: Usage | None, images: int
) -> float | None:
    return gateway.prices.cost(route.price_key, usage=usage, images=images)


def account(
    gateway: Gateway,
    route: Route,
    cost: float | None,
    images: int,
    *,
    usage: Usage | None = None,
) -> None:
    ctx = CURRENT.get()
    model_label = ctx.model_label if ctx is not None else "other"
    gateway.metrics.record_result(
        route.provider,
        model_label,
        ctx.key if ctx is not None else ANONYMOUS,
        cost=cost,
        usage=usage,
        images=images,
    )
    if ctx is not None:
        ctx.cost = cost
        ctx.images = images


def splice(body: bytes, extra: bytes) -> bytes:
    """Append ``"k":v`` members to an encoded JSON object without decoding it.

    One copy of the (often megabytes of base64) body: slicing and ``+`` made four.
    """
    close = body.rindex(b"}")
    assert not body[close + 1 :].strip()
    last = close - 1
    while last >= 0 and body[last] in b" \t\r\n":
        last -= 1
    sep = b"" if body[last : last + 1] == b"{" else b","
    return b"".join((memoryview(body)[: last + 1], sep, extra, b"}"))
