"""The ``pricing`` member of a ``GET /v3/images/models`` entry, for estimates.

It restates the price table's row for the model (``proxy/catalog.yaml``) and, for a
token-priced model, what one output image costs by quality at 1024x1024 (the most
its catalogue row's output tokens per image allow, ``proxy.catalogue.bound``), so a
client such as the ``/ui`` page can estimate before it runs. An estimate: for a
quote, ``POST /v3/images/quote``. A model the table does not price has no
``pricing`` member.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from proxy.catalogue.bound import Ask, bounds
from proxy.catalogue.cost import usd
from proxy.pricing import PriceTable

_QUALITIES = ("low", "medium", "high")


class ModelPricing(msgspec.Struct, frozen=True, omit_defaults=True):
    basis: Literal["per_image", "tokens"]
    # basis per_image: USD per returned image.
    per_image_usd: float | None = None
    # basis tokens: USD per 1M tokens, and one output image at 1024x1024 by quality.
    text_input_per_1m: float | None = None
    image_input_per_1m: float | None = None
    image_output_per_1m: float | None = None
    image_1024_usd: dict[str, float] | None = None


def pricing_of(prices: PriceTable, key: str) -> ModelPricing | msgspec.UnsetType:
    """``key`` is "<provider type>/<model id>", as the price table keys rows."""
    row = prices.row(key)
    if row is None:
        return msgspec.UNSET
    if row.per_image is not None:
        return ModelPricing("per_image", per_image_usd=row.per_image)
    if row.image_output is None:
        return msgspec.UNSET  # no output rate: nothing to estimate from
    entry = None if prices.catalogue is None else prices.catalogue.get(key)
    per_image: dict[str, float] = {}
    for q in _QUALITIES:
        most = bounds(entry, Ask(size="1024x1024", quality=q)).high
        if most is not None:
            per_image[q] = round(usd(most), 6)
    return ModelPricing(
        "tokens",
        text_input_per_1m=row.text_input,
        image_input_per_1m=row.image_input,
        image_output_per_1m=row.image_output,
        image_1024_usd=per_image or None,
    )
