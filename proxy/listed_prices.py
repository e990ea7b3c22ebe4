"""The ``pricing`` member of a ``GET /v3/images/models`` entry, for estimates.

It restates the price table's row for the model (``proxy/catalog.yaml``) and, for a
token-priced model, what one output image costs by quality at 1024x1024 (the output
tokens OpenAI's per-image prices imply, ``pricing.output_tokens_bound``), so a client
such as the ``/ui`` page can estimate before it runs. An estimate, not a quote: input
image and prompt tokens are known only from the reply. A model the table does not
price has no ``pricing`` member. A later price catalogue replaces this module.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from proxy.pricing import PriceTable, output_tokens_bound

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
    per_image = {
        q: round(output_tokens_bound("1024x1024", q) * row.image_output / 1e6, 6)
        for q in _QUALITIES
    }
    return ModelPricing(
        "tokens",
        text_input_per_1m=row.text_input,
        image_input_per_1m=row.image_input,
        image_output_per_1m=row.image_output,
        image_1024_usd=per_image,
    )
