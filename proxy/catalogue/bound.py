"""What a request can cost before it is sent: the least and the most, from the
catalogue row, for every price shape. The quote (``POST /v3/images/quote``) answers
with both; the budget (``proxy.budget``) reserves the most. One function, so the two
are the same number by construction.

What the request says decides the range: ``n`` output images (made in ``calls``
upstream calls when the provider makes one per call), ``size``, ``quality`` and
``resolution`` pick the price tier; a field left to the provider (``auto``, unset)
spans every tier it may pick. Per shape:

- tokens: n times the output image tokens for the tier (``tokens_per_image``, plus
  100 per streamed partial image), plus the prompt at the text input rate counting
  each UTF-8 byte as a token (a token is at least one byte: never under), plus input
  images where the catalogue has a fixed token count per input image. A size the
  table has no row for scales the densest row of its quality by pixels (never below
  the table's largest count): an upper bound, since tokens grow slower than pixels.
- per image (by size, quality, resolution): n times the tier's price.
- per megapixel: each image's first and further started megapixels, from ``size``.
- credits: n times count times the credit's value. Per prediction: per call.
- surcharges: per input image, per call; per input megapixel from the input images'
  dimensions when they are known.

Charges nobody can know before the reply stay out and are named in ``notes``:
input image tokens without a published count, text output (Gemini's thinking). The
most is then what the request is known to cost at least that much for, plus the
output's worst case; the reply's usage settles the rest. An unknown rate the range
needs gives no range (``low`` and ``high`` None) and a ``reason``: never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import NamedTuple

from proxy.catalogue.cost import megapixel_cost
from proxy.catalogue.schema import Entry, PerImage, Price, Tokens, TokensPerImage
from proxy.models import EditJob
from proxy.providers._sizes import gemini_image_size, parse_size

_MILLION = Decimal(1_000_000)
_MP = 1_000_000
# Each streamed partial image adds this many output image tokens (OpenAI's image
# generation guide, as quoted in the catalogue's gpt-image-1 row).
PARTIAL_TOKENS = 100


class Ask(NamedTuple):
    """What the request says, as far as its price depends on it."""

    n: int = 1  # output images
    calls: int = 1  # upstream calls (n when the provider makes one image per call)
    size: str | None = None
    quality: str | None = None
    resolution: str | None = None
    prompt_bytes: int = 0  # per call
    inputs: int = 0  # input images, per call
    input_sizes: Sequence[tuple[int, int]] | None = None  # (w, h), None = unknown
    partials: int = 0  # streamed partial images per output image


class Range(NamedTuple):
    low: Decimal | None
    high: Decimal | None
    reason: str | None = None  # why there is no range
    notes: tuple[str, ...] = ()  # charges left out of ``high``


def _none(reason: str) -> Range:
    return Range(None, None, reason)


def ask_of(job: EditJob, *, native_n: bool) -> Ask:
    """The ``Ask`` of a job run on a provider that makes ``n`` images in one call
    (``native_n``) or one image per call."""
    n = job.n or 1
    resolution = job.extra.get("resolution")
    return Ask(
        n=n,
        calls=1 if native_n else n,
        size=job.size,
        quality=job.quality,
        resolution=resolution if isinstance(resolution, str) else None,
        prompt_bytes=len(job.prompt.encode()),
        inputs=len(job.images),
        partials=(job.partial_images or 0) if job.stream else 0,
    )


def _d(value: float) -> Decimal:
    return Decimal(str(value))


def _per_million(tokens: int, rate: float) -> Decimal:
    return tokens * _d(rate) / _MILLION


# -- output image tokens ------------------------------------------------------------


def _pixels(key: str) -> int | None:
    w, sep, h = key.partition("x")
    return int(w) * int(h) if sep and w.isdigit() and h.isdigit() else None


def _size_quality_tokens(
    entry: Entry, tpi: TokensPerImage, ask: Ask
) -> tuple[int, int] | str:
    """(least, most) output tokens per image, or why they are unknown."""
    rows: dict[str, dict[str, int | None]] = {}
    for key, tokens in tpi.table.items():
        size, _, quality = key.partition("/")
        rows.setdefault(quality, {})[size] = tokens
    if not rows:
        return "the model's output tokens per image are not published"
    if ask.quality in (None, "auto"):
        qualities = sorted(rows)
    elif ask.quality in rows:
        qualities = [ask.quality]
    else:
        return f"output tokens for quality {ask.quality!r} are not published"
    caps = entry.capabilities
    listed = caps.sizes.values if caps is not None and caps.sizes is not None else []
    parsed = parse_size(ask.size)
    counts: list[int] = []
    for q in qualities:
        by_size = rows[q]
        if parsed is None:  # auto: any size the provider picks by itself
            sizes = [str(s) for s in listed if str(s) in by_size] or list(by_size)
            found = [by_size[s] for s in sizes]
        elif f"{parsed.width}x{parsed.height}" in by_size:
            found = [by_size[f"{parsed.width}x{parsed.height}"]]
        elif parsed.width is None or parsed.height is None:
            return f"output tokens for size {ask.size!r} are not published"
        else:
            known = [(t, _pixels(s)) for s, t in by_size.items()]
            if any(t is None or p is None for t, p in known):
                return f"output tokens for size {ask.size!r} are not published"
            dens = [(t or 0) / (p or 1) for t, p in known]
            pixels = parsed.width * parsed.height
            top = max(math.ceil(max(dens) * pixels), *(t or 0 for t, _ in known))
            found = [math.floor(min(dens) * pixels), top]
        if any(t is None for t in found):
            return f"output tokens for quality {q!r} are not all published"
        counts += [t for t in found if t is not None]
    return min(counts), max(counts)


def _image_size_tokens(tpi: TokensPerImage, ask: Ask) -> tuple[int, int] | str:
    # Gemini's tier for the size, as the adapter picks it (auto: 1K).
    tier = gemini_image_size(ask.size, provider="google") or "1K"
    tokens = tpi.table.get(tier)
    if tokens is None:
        return f"output tokens of a {tier} image are not published"
    return tokens, tokens


def _tokens(entry: Entry, t: Tokens, ask: Ask) -> Range:
    tpi = entry.tokens_per_image
    if t.image_out is None:
        return _none("the model's image output rate is not published")
    if tpi is None:
        return _none("the model's output tokens per image are not published")
    per_image = (
        _image_size_tokens(tpi, ask)
        if tpi.by == "image_size"
        else _size_quality_tokens(entry, tpi, ask)
    )
    if isinstance(per_image, str):
        return _none(per_image)
    partial = ask.partials * PARTIAL_TOKENS
    least = _per_million(ask.n * (per_image[0] + partial), t.image_out)
    most = _per_million(ask.n * (per_image[1] + partial), t.image_out)
    notes: list[str] = []
    known = Decimal(0)
    if ask.inputs:
        if tpi.input_image_tokens is not None and t.image_in is not None:
            tokens = tpi.input_image_tokens * ask.inputs * ask.calls
            known += _per_million(tokens, t.image_in)
        else:
            notes.append("input image tokens (billed from the reply's usage)")
    if ask.prompt_bytes:
        if t.text_in is not None:
            most += _per_million(ask.prompt_bytes * ask.calls, t.text_in)
        else:
            notes.append("prompt tokens (text input rate not published)")
    if t.text_out is not None:
        notes.append("text output tokens, such as thinking (from the reply's usage)")
    return Range(least + known, most + known, notes=tuple(notes))


# -- per image, per megapixel, credits ------------------------------------------------


def _cells(table: PerImage, ask: Ask) -> list[float | None] | str:
    if "any" in table.table:
        return [table.table["any"]]
    asked = {"size": ask.size, "quality": ask.quality, "resolution": ask.resolution}
    dims = table.by.split("_")
    cells: list[float | None] = []
    for key, rate in table.table.items():
        parts = key.split("/")
        if all(asked[d] in (None, "auto", p) for d, p in zip(dims, parts, strict=True)):
            cells.append(rate)
    if not cells:
        named = ", ".join(f"{d} {asked[d]!r}" for d in dims if asked[d])
        return f"no published price for {named}"
    return cells


def _per_image(table: PerImage, ask: Ask) -> Range:
    cells = _cells(table, ask)
    if isinstance(cells, str):
        return _none(cells)
    if any(c is None for c in cells):
        return _none("a price tier the request may land on is not published")
    rates = [_d(c) for c in cells if c is not None]
    return Range(min(rates) * ask.n, max(rates) * ask.n)


def _megapixels(price: Price, ask: Ask) -> Range:
    pm = price.per_megapixel
    assert pm is not None
    parsed = parse_size(ask.size)
    if pm.first is None:
        return _none("the first megapixel's price is not published")
    if parsed is None or parsed.width is None or parsed.height is None:
        return _none("the price is per output megapixel: give size as WIDTHxHEIGHT")
    w, h = parsed.width, parsed.height
    if pm.extra is None and w * h > _MP:
        return _none("the price of megapixels after the first is not published")
    one = megapixel_cost(_d(pm.first), _d(pm.extra or 0), w, h)
    return Range(one * ask.n, one * ask.n)


def _base(entry: Entry, price: Price, ask: Ask) -> Range:
    if price.tokens is not None:
        return _tokens(entry, price.tokens, ask)
    if price.per_image is not None:
        return _per_image(price.per_image, ask)
    if price.per_megapixel is not None:
        return _megapixels(price, ask)
    if price.credits is not None:
        c = price.credits
        if c.count is None or c.usd_per_credit is None:
            return _none("the model's credits per image are not published")
        each = _d(c.count) * _d(c.usd_per_credit) * ask.n
        return Range(each, each)
    if price.per_prediction is not None:
        each = _d(price.per_prediction) * ask.calls
        return Range(each, each)
    return _none("billed per second of run time, which is known only afterwards")


def _surcharges(price: Price, ask: Ask, base: Range) -> Range:
    assert base.low is not None
    assert base.high is not None
    extra, notes = Decimal(0), list(base.notes)
    if not ask.inputs:
        return base
    if price.per_input_image is None or price.per_input_megapixel is None:
        return _none("input images are charged at a rate that is not published")
    if isinstance(price.per_input_image, float):
        extra += _d(price.per_input_image) * ask.inputs * ask.calls
    if isinstance(price.per_input_megapixel, float):
        if ask.input_sizes is None:
            notes.append("input megapixels (the input images' sizes are not known)")
        else:
            started = sum(math.ceil(w * h / _MP) for w, h in ask.input_sizes)
            extra += _d(price.per_input_megapixel) * started * ask.calls
    return Range(base.low + extra, base.high + extra, notes=tuple(notes))


def bounds(entry: Entry | None, ask: Ask) -> Range:
    """The least and the most the request can cost (see the module docstring)."""
    if entry is None:
        return _none("the model is not in the catalogue")
    price = entry.price
    if price is None:
        return _none(entry.price_note or "the model has no published price")
    base = _base(entry, price, ask)
    if base.high is None:
        return base
    return _surcharges(price, ask, base)


def partials_cost(entry: Entry | None, partials: int) -> Decimal | None:
    """What ``partials`` streamed partial images cost, for a stream cut short."""
    price = None if entry is None else entry.price
    if price is None or price.tokens is None or price.tokens.image_out is None:
        return None
    return _per_million(partials * PARTIAL_TOKENS, price.tokens.image_out)
