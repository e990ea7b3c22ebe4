"""Cost in USD from a provider's usage, using the price table kept as data.

Never invents a number: a missing price, or usage the table cannot price, gives None.
"""

from __future__ import annotations

from importlib import resources

import msgspec

from proxy.models import Usage

_PER_MILLION = 1_000_000


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text_input: float | None = None
    image_input: float | None = None
    image_output: float | None = None
    text_output: float | None = None
    per_image: float | None = None


class PriceTable:
    def __init__(self, rows: dict[str, Price]) -> None:
        self._rows = rows

    @classmethod
    def load_default(cls) -> PriceTable:
        text = resources.files("proxy").joinpath("pricing.yaml").read_bytes()
        return cls(msgspec.yaml.decode(text, type=dict[str, Price]))

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def models(self, provider_type: str) -> list[str]:
        """The model ids priced for one provider type, sorted."""
        prefix = f"{provider_type}/"
        return sorted(k[len(prefix) :] for k in self._rows if k.startswith(prefix))

    def cost(self, key: str, *, usage: Usage | None, images: int) -> float | None:
        price = self._rows.get(key)
        if price is None:
            return None
        if price.per_image is not None:
            return round(price.per_image * images, 8)
        if usage is None:
            return None
        return _token_cost(price, usage)


def _token_cost(price: Price, usage: Usage) -> float | None:
    parts: list[tuple[int, float | None]] = []
    inp = usage.input_tokens_details
    if inp is not None and (
        inp.text_tokens is not None or inp.image_tokens is not None
    ):
        parts.append((inp.text_tokens or 0, price.text_input))
        parts.append((inp.image_tokens or 0, price.image_input))
    elif usage.input_tokens:
        return None  # an undivided input count cannot be priced at two rates
    out = usage.output_tokens_details
    if out is not None and (
        out.text_tokens is not None or out.image_tokens is not None
    ):
        parts.append((out.image_tokens or 0, price.image_output))
        parts.append((out.text_tokens or 0, price.text_output))
    else:
        # OpenAI reports image models' output as image tokens unless it splits them.
        parts.append((usage.output_tokens or 0, price.image_output))
    total = 0.0
    for tokens, rate in parts:
        if tokens == 0:
            continue
        if rate is None:
            return None
        total += tokens * rate
    return round(total / _PER_MILLION, 8)
