"""The least and the most a request can cost before it is sent
(``proxy.catalogue.bound``), per price shape, each computed by hand from the rates in
``proxy/catalog.yaml``; and the most covers OpenAI's published per-image prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.catalogue.bound import Ask, bounds, partials_cost
from proxy.catalogue.load import Catalogue
from proxy.catalogue.schema import Entry, PerImage, Price
from proxy.errors import InvalidRequest

CAT = Catalogue.load_default()
SIZES = ("1024x1024", "1024x1536", "1536x1024")
# model: {quality: USD per image at SIZES} (providers.md 1.8; the model pages)
PUBLISHED = {
    "openai/gpt-image-2": {"low": (0.006, 0.005, 0.005),
                           "medium": (0.053, 0.041, 0.041),
                           "high": (0.211, 0.165, 0.165)},
}  # fmt: skip


def _range(key: str, **ask: object) -> tuple[Decimal | None, Decimal | None]:
    got = bounds(CAT.get(key), Ask(**ask))  # type: ignore[arg-type]
    return got.low, got.high


def _d(text: str) -> Decimal:
    return Decimal(text)


@pytest.mark.parametrize("model", sorted(PUBLISHED))
@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto", None])
def test_the_most_covers_every_published_price(model: str, quality: str | None) -> None:
    table = PUBLISHED[model]
    for i, size in enumerate(SIZES):
        # An unknown quality must cover the dearest one; an unknown size every size.
        dearest = max(p[i] for p in table.values())
        published = table[quality][i] if quality in table else dearest
        for asked in (size, None, "auto"):
            low, high = _range(model, size=asked, quality=quality)
            assert high is not None
            assert low is not None
            # Published prices are the token counts' cost rounded for show (5488
            # tokens x $30/1M = 0.16464 shown as 0.165, 158 -> 0.00474 as 0.005):
            # within 1% or half a tenth of a cent. The reply's usage settles.
            shown = Decimal(str(published))
            floor = min(shown * Decimal("0.99"), shown - Decimal("0.0005"))
            assert high >= floor, (model, asked)
            assert low <= high


def test_tokens_by_size_and_quality() -> None:
    key = "openai/gpt-image-2"
    # 2 x (196 + 3 partials x 100) tokens at $30/1M; 20 prompt bytes at $5/1M on top.
    assert _range(
        key, n=2, size="1024x1024", quality="low", prompt_bytes=20, partials=3
    ) == (_d("0.02976"), _d("0.02986"))
    # auto: the sizes the provider picks by itself (7024 square, 5488 oblong).
    assert _range(key, size="auto", quality="high") == (_d("0.16464"), _d("0.21072"))
    # Neither: from 158 (oblong low) to 7024 (square high).
    assert _range(key) == (_d("0.00474"), _d("0.21072"))
    # A size the table has: its own count (13342 at high).
    assert _range(key, size="3840x2160", quality="high")[1] == _d("0.40026")
    # One it has not: the densest row (7024 per 1024^2) scaled: 7024 x 2.25 = 15804.
    assert _range(key, size="2048x1152", quality="high")[1] == _d("0.47412")
    # A quality without published counts: no range, a reason.
    got = bounds(CAT.get(key), Ask(quality="xhigh"))
    assert (got.low, got.high) == (None, None)
    assert got.reason is not None
    assert "xhigh" in got.reason
    # Input image tokens are not published per image: left out, and said so.
    assert any("input image" in n for n in bounds(CAT.get(key), Ask(inputs=1)).notes)
    # No token table (gpt-image-2.6): no pre-call bound.
    assert _range("openai/gpt-image-2.6-sunburst", quality="low") == (None, None)


def test_tokens_by_gemini_tier_with_input_images_and_fan_out() -> None:
    # gemini-3-pro-image: 1120 tokens per 1K image at $120/1M; 560 tokens per input
    # image at $2/1M; n=2 is two calls, each with the 2 inputs and the 10-byte prompt.
    ask = Ask(n=2, calls=2, inputs=2, prompt_bytes=10)
    got = bounds(CAT.get("google/gemini-3-pro-image"), ask)
    # 2 x 1120 x 120 = 268800; 2 x 2 x 560 x 2 = 4480; prompt 2 x 10 x 2 = 40.
    assert (got.low, got.high) == (_d("0.27328"), _d("0.27332"))
    assert any("thinking" in n for n in got.notes)
    # A 4K size: 2000 tokens; the same row on Vertex.
    assert _range("vertex/gemini-3-pro-image", size="4096x4096")[1] == _d("0.24")
    # flash: 2520 tokens at 4K, $60/1M.
    assert _range("google/gemini-3.1-flash-image", size="3840x2160")[1] == _d("0.1512")
    # flash-lite publishes no input tokens per image: noted, not guessed.
    lite = bounds(CAT.get("google/gemini-3.1-flash-lite-image"), Ask(inputs=1))
    assert lite.high == _d("0.0336")  # 1120 x $30/1M
    assert any("input image" in n for n in lite.notes)
    with pytest.raises(InvalidRequest):
        bounds(CAT.get("google/gemini-3-pro-image"), Ask(size="9000x9000"))


def test_per_image_by_tier_with_input_image_charge() -> None:
    xai = "xai/grok-imagine-image-2.0"
    # 2 x $0.08 (2k/medium) + 3 input images x $0.01.
    assert _range(xai, n=2, resolution="2k", quality="medium", inputs=3) == (
        _d("0.19"),
        _d("0.19"),
    )
    assert _range(xai, resolution="1k", quality="low") == (_d("0.04"), _d("0.04"))
    # 1k with quality left to xAI may land on 1k/medium, which is not published.
    assert _range(xai, resolution="1k") == (None, None)
    assert _range(xai, resolution="4k", quality="low") == (None, None)
    # A row by size and quality (an operator's, in the catalogue's shape).
    table: dict[str, float | None] = {"1024x1024/standard": 0.04, "1792x1024/standard": 0.08,
             "1024x1024/hd": 0.08, "1792x1024/hd": 0.12}  # fmt: skip
    tiers = Entry(price=Price(per_image=PerImage(by="size_quality", table=table)))
    assert bounds(tiers, Ask(size="1792x1024", quality="hd")).high == _d("0.12")
    got = bounds(tiers, Ask(size="1024x1024"))  # either quality
    assert (got.low, got.high) == (_d("0.04"), _d("0.08"))
    got = bounds(tiers, Ask(n=3))  # any size and quality
    assert (got.low, got.high) == (_d("0.12"), _d("0.36"))
    assert (
        bounds(tiers, Ask(size="512x512")).reason
        == "no published price for size '512x512'"
    )
    # One price for any size: grok-imagine-image's $0.02.
    assert _range("xai/grok-imagine-image", n=3)[1] == _d("0.06")


def test_per_megapixel_first_and_started_extra() -> None:
    pro = "bfl/flux-2-pro"
    # 1920x1080 = 2.07 MP: the first at $0.03, 2 more started at $0.015.
    low, high = _range(pro, size="1920x1080")
    assert (low, high) == (_d("0.06"), _d("0.06"))
    assert bounds(CAT.get(pro), Ask(size="1920x1080", inputs=1)).notes
    # With the input's size known: 1024x1024 is 1.05 MP, 2 started at $0.015.
    with_input = Ask(size="1920x1080", inputs=1, input_sizes=[(1024, 1024)])
    assert bounds(CAT.get(pro), with_input).high == _d("0.09")
    assert _range("bfl/flux-2-klein-4b", n=2, size="1000x1000")[1] == _d("0.028")
    # No size, or megapixels after the first at a disputed rate: no range.
    assert _range(pro, size="auto") == (None, None)
    assert _range("bfl/flux-2-flex", size="1000x1000")[1] == _d("0.05")
    assert _range("bfl/flux-2-flex", size="1024x1024") == (None, None)


def test_credits_prediction_and_the_unpriced() -> None:
    assert _range("stabilityai/ultra")[1] == _d("0.08")  # 8 credits x $0.01
    assert _range("bfl/flux-kontext-pro", n=2)[1] == _d("0.08")
    assert _range("stabilityai/inpaint") == (None, None)  # credits unpublished
    per_call = Entry(price=Price(per_prediction=0.059))
    assert bounds(per_call, Ask(n=3, calls=3)).high == _d("0.177")
    assert bounds(Entry(price=Price(per_second=0.001)), Ask()).high is None
    assert bounds(None, Ask()).reason == "the model is not in the catalogue"
    null = bounds(CAT.get("bfl/flux-pro-1.0-fill"), Ask())
    assert null.high is None
    assert null.reason is not None


def test_partials_of_a_stream_cut_short() -> None:
    # 3 partial images x 100 tokens at $30/1M.
    assert partials_cost(CAT.get("openai/gpt-image-2"), 3) == _d("0.009")
    assert partials_cost(CAT.get("stabilityai/ultra"), 3) is None


def test_an_input_charge_at_an_unpublished_rate_has_no_worst_case() -> None:
    # Generations are bounded; an edit's inputs are charged at a rate not published,
    # so its worst case is unknown (a budgeted key needs limits.unpriced_image_usd).
    assert _range("xai/grok-imagine-image", n=2) == (_d("0.04"), _d("0.04"))
    got = bounds(CAT.get("xai/grok-imagine-image"), Ask(inputs=1))
    assert (got.low, got.high) == (None, None)
    assert got.reason == "input images are charged at a rate that is not published"
    got = bounds(CAT.get("bfl/flux-2-max"), Ask(size="1024x1024", inputs=1))
    assert got.high is None
