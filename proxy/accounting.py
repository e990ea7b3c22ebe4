"""Pricing and accounting of an answered request: the one place for JSON answers,
completed events made from a JSON answer, and relayed streams.

Prices the answer from the provider's usage (unless the adapter knew its cost), counts
it in the metrics, and leaves cost and images on the request context for the access
log.
"""

from __future__ import annotations

from typing import Any

from proxy.catalogue.cost import Facts, cost, usd
from proxy.catalogue.measure import output_sizes
from proxy.context import RequestContext
from proxy.metrics import Metrics
from proxy.models import EditJob, EditResult, StoredImage, Usage
from proxy.pixels import dimensions
from proxy.pricing import PriceTable
from proxy.routing import Route

# Enough of an image for its pixel size: a JPEG's frame header may follow EXIF data.
HEAD_BYTES = 65536


def facts(
    job: EditJob, result: EditResult, *, one_per_call: bool, measure: bool
) -> Facts:
    """What happened: output images (and, when ``measure``, their sizes from their
    headers), inputs, calls (a provider making one image per call was called once per
    image). Measuring scans the whole reply: only a per-megapixel price needs it."""
    resolution: Any = job.extra.get("resolution")
    return Facts(
        images=result.images,
        usage=result.usage,
        sizes=output_sizes(result.body) if measure else None,
        inputs=len(job.images),
        input_sizes=input_sizes(job) if measure else None,
        calls=max(1, result.images) if one_per_call else 1,
        size=job.size,
        quality=job.quality,
        resolution=resolution if isinstance(resolution, str) else None,
    )


def input_sizes(job: EditJob) -> list[tuple[int, int]] | None:
    """(width, height) of each input image the gateway holds in memory, from its
    header; None when one is not (a file on disk, a URL, a stored file)."""
    sizes = []
    for image in job.images:
        data = image.data if isinstance(image, StoredImage) else None
        size = None if data is None else dimensions(data[:HEAD_BYTES])
        if size is None:
            return None
        sizes.append(size)
    return sizes


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
    without the job (a streamed event), from its usage or per-image rate alone."""
    row = None if prices.catalogue is None else prices.catalogue.get(route.price_key)
    if row is None or row.price is None or job is None or result is None:
        return prices.cost(route.price_key, usage=usage, images=images)
    caps = row.capabilities
    one_per_call = caps is not None and caps.n_max == 1
    measure = (
        row.price.per_megapixel is not None or row.price.per_input_megapixel is not None
    )
    total = cost(
        row.price, facts(job, result, one_per_call=one_per_call, measure=measure)
    )
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
    spent = result.cost
    if spent is None:
        spent = price(
            prices, route, usage=result.usage, images=result.images, job=job,
            result=result,
        )  # fmt: skip
    account(metrics, ctx, route, spent, result.images, usage=result.usage)
    return spent


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
