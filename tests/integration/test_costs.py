"""Cost through the official SDK against the fake providers, for edits and
generations, matched to a hand computation from the catalogue's published rates."""

from __future__ import annotations

import pytest

from tests.conftest import StartGateway
from tests.images import png

# (provider type, model, operation, n, hand-computed USD)
CASES = [
    # Kontext: 4 credits x $0.01 per output image (edits as generations).
    ("bfl", "bfl/flux-kontext-pro", "edit", 1, 0.04),
    ("bfl", "bfl/flux-kontext-max", "generate", 1, 0.08),
    # Stability generation: credits x $0.01.
    ("stabilityai", "stabilityai/ultra", "generate", 1, 0.08),
    ("stabilityai", "stabilityai/core", "generate", 1, 0.03),
    # grok-imagine-image: $0.02 per output image.
    ("xai", "xai/grok-imagine-image", "generate", 2, 0.04),
    # Its edits' input images are charged at an unpublished rate: cost null there
    # (tests/integration/test_catalogue_costs.py), never the output price alone.
    # Gemini GA id, the fake's usage: 10 text + 1290 image tokens in and out.
    # 10*2 + 1290*2 + 1290*120 + 10*12 = 157520 per 1M = 0.15752
    ("google", "google/gemini-3-pro-image", "edit", 1, 0.15752),
    ("google", "google/gemini-3-pro-image", "generate", 1, 0.15752),
    # gemini-3.1-flash-image: 10*0.5 + 1290*0.5 + 1290*60 + 10*3 = 78080 -> 0.07808;
    # n=2 fans out to two calls, usage summed: 0.15616.
    ("google", "google/gemini-3.1-flash-image", "generate", 2, 0.15616),
]


@pytest.mark.parametrize(("kind", "model", "op", "n", "usd"), CASES)
async def test_cost_matches_the_hand_computation(
    start_gateway: StartGateway, kind: str, model: str, op: str, n: int, usd: float
) -> None:
    gateway = await start_gateway(kind)
    sdk = gateway.sdk()
    if op == "edit":
        image = ("a.png", png(8, 8), "image/png")
        result = await sdk.images.edit(model=model, image=image, prompt="a hat", n=n)
    else:
        result = await sdk.images.generate(model=model, prompt="a boat", n=n)
    extra = result.model_extra or {}
    assert extra["cost"] == pytest.approx(usd, rel=1e-3)
