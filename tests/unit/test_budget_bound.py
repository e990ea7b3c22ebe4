"""The reservation bound against OpenAI's published per-image prices (providers.md 1.8):
no published image costs more than its model's bound for that size and quality."""

from __future__ import annotations

import pytest

from proxy.pricing import PriceTable, output_tokens_bound

SIZES = ("1024x1024", "1024x1536", "1536x1024")
# model: {quality: USD per image at SIZES}
PUBLISHED = {
    "openai/gpt-image-1": {"low": (0.011, 0.016, 0.016),
                           "medium": (0.042, 0.063, 0.063),
                           "high": (0.167, 0.25, 0.25)},
    "openai/gpt-image-1-mini": {"low": (0.005, 0.006, 0.006),
                                "medium": (0.011, 0.015, 0.015),
                                "high": (0.036, 0.052, 0.052)},
    "openai/gpt-image-1.5": {"low": (0.009, 0.013, 0.013),
                             "medium": (0.034, 0.05, 0.05),
                             "high": (0.133, 0.20, 0.20)},
    "openai/gpt-image-2": {"low": (0.006, 0.005, 0.005),
                           "medium": (0.053, 0.041, 0.041),
                           "high": (0.211, 0.165, 0.165)},
}  # fmt: skip


@pytest.mark.parametrize("model", sorted(PUBLISHED))
@pytest.mark.parametrize("quality", ["low", "medium", "high", "auto", None])
def test_bound_covers_every_published_price(model: str, quality: str | None) -> None:
    prices = PriceTable.load_default()
    table = PUBLISHED[model]
    for i, size in enumerate(SIZES):
        # An unknown quality must cover the dearest one; an unknown size every size.
        worst = max(p[i] for p in table.values()) if quality not in table else 0
        published = table[quality][i] if quality in table else worst
        for asked in (size, None, "auto"):
            bound = prices.bound(model, n=1, size=asked, quality=quality, prompt="")
            assert bound is not None
            assert bound >= published, (model, quality, asked)


def test_bound_scales_custom_sizes_and_counts_partials_and_prompt() -> None:
    prices = PriceTable.load_default()
    # 3840x2160 at high: 7034 tokens per 1024x1024, scaled by pixels.
    assert output_tokens_bound("3840x2160", "high") == 55_641
    assert output_tokens_bound("512x512", "low") == 625  # never below the square
    two = prices.bound(
        "openai/gpt-image-2", n=2, size="1024x1024", quality="low",
        prompt="é" * 10, partials=3,
    )  # fmt: skip
    # 2 x (625 + 300) tokens at $30/1M, 20 prompt bytes at $5/1M.
    assert two == pytest.approx((2 * 925 * 30 + 20 * 5) / 1e6)
    assert prices.bound("vertex/imagen-4.0-generate-001", n=3, size=None,
                        quality=None, prompt="x") == pytest.approx(0.12)  # fmt: skip
    assert prices.bound("replicate/x", n=1, size=None, quality=None, prompt="") is None
