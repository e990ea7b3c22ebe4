"""The shape of a catalogue row, as ``proxy/catalog.yaml`` and config ``catalogue:``
write it. Every field is optional so that an override may name only what it changes.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec

Verdict = Literal["primary", "secondary", "derived", "mixed", "not_found"]
Status = Literal["active", "deprecated", "shutdown", "unknown"]


class Row(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class Lifecycle(Row, frozen=True):
    released: dt.date | None = None
    deprecated: dt.date | None = None
    shutdown: dt.date | None = None
    replacement: str | list[str] | None = None

    def replacements(self) -> list[str]:
        r = self.replacement
        return [] if r is None else [r] if isinstance(r, str) else list(r)

    def status(self, today: dt.date) -> Status:
        if self.shutdown is not None and today >= self.shutdown:
            return "shutdown"
        if self.deprecated is not None or self.shutdown is not None:
            return "deprecated"
        if self.released is None:
            return "unknown"
        return "active"


class Sizes(Row, frozen=True):
    kind: Literal["openai_wxh", "tiers", "aspect_ratios", "fixed", "input"]
    values: list[str | int] = []
    rules: str | None = None


class Capabilities(Row, frozen=True):
    edit: bool = True
    generate: bool = True
    mask: bool = False
    max_images: int | None = None
    n_max: int | None = None
    sizes: Sizes | None = None
    qualities: list[str] | None = None
    streaming: bool = False
    adapter_supported: bool = True


class Tokens(Row, frozen=True):
    """USD per 1M tokens; None = not published (a cost that needs it is None)."""

    text_in: float | None = None
    text_in_cached: float | None = None
    image_in: float | None = None
    image_in_cached: float | None = None
    text_out: float | None = None
    image_out: float | None = None


PerImageBy = Literal[
    "size", "quality", "resolution", "size_quality", "resolution_quality"
]


class PerImage(Row, frozen=True):
    """USD per output image; ``table`` key "any", one value, or "<a>/<b>" for 2-D."""

    by: PerImageBy
    table: dict[str, float | None]


class PerMegapixel(Row, frozen=True):
    """USD for the first output megapixel and for each further (started) one."""

    first: float | None = None
    extra: float | None = None


class Credits(Row, frozen=True):
    """Credits per output image, and what one credit costs."""

    count: float | None = None
    usd_per_credit: float | None = None


class Price(Row, frozen=True):
    tokens: Tokens | None = None
    per_image: PerImage | None = None
    per_megapixel: PerMegapixel | None = None
    credits: Credits | None = None
    per_second: float | None = None
    per_prediction: float | None = None
    # Surcharges on input images. Absent: the provider charges none. null: it charges
    # one at a rate not published, so no cost or worst case can be given for inputs.
    per_input_image: float | msgspec.UnsetType | None = msgspec.UNSET
    per_input_megapixel: float | msgspec.UnsetType | None = msgspec.UNSET

    def shape(self) -> str | None:
        """The base shape's name, or None when the row names none."""
        for name in ("tokens", "per_image", "per_megapixel", "credits"):
            if getattr(self, name) is not None:
                return name
        for name in ("per_second", "per_prediction"):
            if getattr(self, name) is not None:
                return name
        return None


class TokensPerImage(Row, frozen=True):
    by: Literal["size_quality", "image_size"]
    table: dict[str, int | None] = {}
    input_image_tokens: int | None = None
    formula: str | None = None


class Entry(Row, frozen=True):
    alias_of: str | None = None
    status: Status | None = None  # research-only; derived from lifecycle when served
    lifecycle: Lifecycle | None = None
    lifecycle_verdict: Verdict | None = None
    lifecycle_note: str | None = None
    capabilities: Capabilities | None = None
    price: Price | None = None
    tokens_per_image: TokensPerImage | None = None
    price_verdict: Verdict | None = None
    price_note: str | None = None
    source: list[str] = []
    checked: dt.date | None = None


class File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The catalogue file: rows per provider type, a default ``checked`` date."""

    schema_version: int
    checked: dt.date
    providers: dict[str, dict[str, Entry]]
