"""The catalogue (catalog.yaml) as the app holds it, with each row's flat rates where
the row has them (token rates, or one price per image) for ``GET /v3/images/models``'
``pricing`` member (``proxy.listed_prices``).

Costs are ``proxy.catalogue.cost``'s, from the row in the provider's billing shape;
the most a request can cost before it is sent is ``proxy.catalogue.bound``'s.
"""

from __future__ import annotations

import msgspec

from proxy.catalogue.load import Catalogue, Rows
from proxy.catalogue.schema import Entry


class Price(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text_input: float | None = None
    image_input: float | None = None
    image_output: float | None = None
    text_output: float | None = None
    per_image: float | None = None


def _flat(entry: Entry) -> Price | None:
    """The catalogue row as token rates or one per-image price, where it is either."""
    price = entry.price
    if price is None:
        return None
    if price.tokens is not None:
        t = price.tokens
        return Price(
            text_input=t.text_in,
            image_input=t.image_in,
            image_output=t.image_out,
            text_output=t.text_out,
        )
    if (price.per_input_image, price.per_input_megapixel) != (msgspec.UNSET,) * 2:
        return None  # input charges: not a flat per-image price
    if price.credits is not None:
        c = price.credits
        if c.count is None or c.usd_per_credit is None:
            return None
        return Price(per_image=round(c.count * c.usd_per_credit, 8))
    if price.per_image is not None:
        values = set(price.per_image.table.values())
        if len(values) == 1 and None not in values:
            return Price(per_image=values.pop())
    return None


class PriceTable:
    def __init__(
        self, rows: dict[str, Price], catalogue: Catalogue | None = None
    ) -> None:
        self._rows = rows
        self.catalogue = catalogue

    @classmethod
    def from_catalogue(cls, catalogue: Catalogue) -> PriceTable:
        rows = {}
        for key, entry in catalogue.items():
            flat = _flat(entry)
            if flat is not None:
                rows[key] = flat
        return cls(rows, catalogue)

    @classmethod
    def load_default(cls, overrides: Rows | None = None) -> PriceTable:
        return cls.from_catalogue(Catalogue.load_default(overrides))

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def row(self, key: str) -> Price | None:
        """The table's rates for ``key`` ("<provider type>/<model id>"), if any."""
        return self._rows.get(key)

    def models(self, provider_type: str) -> list[str]:
        """The model ids the catalogue lists for one provider type today, sorted
        (without a catalogue: the priced ones)."""
        if self.catalogue is not None:
            return self.catalogue.models(provider_type)
        prefix = f"{provider_type}/"
        return sorted(k[len(prefix) :] for k in self._rows if k.startswith(prefix))
