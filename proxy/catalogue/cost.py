"""What a call cost, from the catalogue's price in the shape the provider bills and
from what actually happened (``Facts``): tokens from ``usage``, output megapixels from
the returned images' headers, the number of input images, output images and calls.

Exact: the arithmetic is in ``Decimal`` from the catalogue's decimal rates, rounded to
a millionth of a cent only at the end. Never invents a number: a rate the catalogue
does not have, or a fact the shape needs and nobody measured, gives None.

Megapixels are 1,000,000 pixels. FLUX.2 bills the first megapixel at ``first`` and
each further started megapixel at ``extra`` (BFL's calculator; the stored copy of its
explanation is cut off, so the rounding up is an assumption, noted in the catalogue);
input images billed per megapixel (``per_input_megapixel``) count started megapixels
the same way, from the sizes their headers declare.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import NamedTuple

from proxy.catalogue.schema import PerImage, PerMegapixel, Price
from proxy.models import Usage

_MP = 1_000_000
_MILLION = Decimal(1_000_000)
_PLACES = Decimal("0.00000001")


class Facts(NamedTuple):
    """What happened on one request (all calls of a fan-out summed)."""

    images: int  # output images returned
    usage: Usage | None = None
    sizes: Sequence[tuple[int, int]] | None = None  # output (w, h), None = unknown
    inputs: int = 0  # input images sent, per call
    input_sizes: Sequence[tuple[int, int]] | None = None  # their (w, h), None = unknown
    calls: int = 1  # upstream calls (fan-out)
    size: str | None = None  # the request's size, quality and resolution
    quality: str | None = None
    resolution: str | None = None


@functools.cache
def _d(value: float) -> Decimal:
    # Kept: the values are the catalogue's rates, a fixed set, and str(float) plus
    # Decimal() was most of a request's pricing.
    return Decimal(str(value))


def usd(value: Decimal) -> float:
    return float(value.quantize(_PLACES))


def tier_key(table: PerImage, facts: Facts) -> str | None:
    """The ``table`` key for the request: "any", or the tier(s) it names."""
    parts = {
        "size": facts.size or "auto",
        "quality": facts.quality,
        "resolution": facts.resolution,
    }
    by = table.by.split("_")
    values = [parts[b] for b in by]
    if len(by) == 1 and "any" in table.table:
        return "any"
    if any(v is None for v in values):
        return None
    return "/".join(str(v) for v in values)


def megapixel_cost(first: Decimal, extra: Decimal, w: int, h: int) -> Decimal:
    more = max(0, math.ceil(w * h / _MP) - 1)
    return first + extra * more


def _tokens(price: Price, usage: Usage | None) -> Decimal | None:
    t = price.tokens
    if t is None or usage is None:
        return None
    parts: list[tuple[int, float | None]] = []
    inp = usage.input_tokens_details
    if inp is not None and (
        inp.text_tokens is not None or inp.image_tokens is not None
    ):
        parts += [
            (inp.text_tokens or 0, t.text_in),
            (inp.image_tokens or 0, t.image_in),
        ]
    elif usage.input_tokens:
        return None  # one undivided count cannot be priced at two rates
    out = usage.output_tokens_details
    if out is not None and (
        out.text_tokens is not None or out.image_tokens is not None
    ):
        parts += [
            (out.image_tokens or 0, t.image_out),
            (out.text_tokens or 0, t.text_out),
        ]
    else:
        parts.append((usage.output_tokens or 0, t.image_out))
    total = Decimal(0)
    for tokens, rate in parts:
        if tokens == 0:
            continue
        if rate is None:
            return None
        total += tokens * _d(rate)
    return total / _MILLION


def _base(price: Price, facts: Facts) -> Decimal | None:
    if price.tokens is not None:
        return _tokens(price, facts.usage)
    if price.credits is not None:
        c = price.credits
        if c.count is None or c.usd_per_credit is None:
            return None
        return _d(c.count) * _d(c.usd_per_credit) * facts.images
    if price.per_image is not None:
        key = tier_key(price.per_image, facts)
        rate = None if key is None else price.per_image.table.get(key)
        return None if rate is None else _d(rate) * facts.images
    if price.per_megapixel is not None:
        return _megapixels(price.per_megapixel, facts)
    if price.per_prediction is not None:
        return _d(price.per_prediction) * facts.calls
    return None  # per_second: run time is not reported to the gateway


def _megapixels(pm: PerMegapixel, facts: Facts) -> Decimal | None:
    # Apart from ``_base``: its genexpr's cells were made for every price.
    if pm.first is None or facts.sizes is None or len(facts.sizes) != facts.images:
        return None
    if pm.extra is None and any(w * h > _MP for w, h in facts.sizes):
        return None
    first, extra = _d(pm.first), _d(pm.extra or 0)
    return sum((megapixel_cost(first, extra, w, h) for w, h in facts.sizes), Decimal(0))


def cost(price: Price | None, facts: Facts) -> Decimal | None:
    """USD for the request, or None when the price or a fact it needs is unknown."""
    if price is None:
        return None
    total = _base(price, facts)
    if total is None:
        return None
    if not facts.inputs:
        return total
    if price.per_input_image is None or price.per_input_megapixel is None:
        return None  # input images are charged at a rate that is not published
    if isinstance(price.per_input_image, float):
        total += _d(price.per_input_image) * facts.inputs * facts.calls
    if isinstance(price.per_input_megapixel, float):
        if facts.input_sizes is None or len(facts.input_sizes) != facts.inputs:
            return None  # an input image the gateway could not measure
        started = sum(math.ceil(w * h / _MP) for w, h in facts.input_sizes)
        total += _d(price.per_input_megapixel) * started * facts.calls
    return total
