"""Every model in the catalogue with a published price answers a non-null ``cost``
within 0.1% of the hand computation below, for generations and edits, answered whole
and streamed, through the official ``openai`` SDK against the fake providers.

Each expected cost is worked out here from the published rate (``proxy/catalog.yaml``,
with its source) and from what the fake answers, not by the gateway's cost engine:

- OpenAI and Azure fakes report 10 text and 40 image tokens in, 1000 image tokens out
  per image (``tests/fakes/openai.py``); a stream's completed event the same for its
  one image (``tests/fakes/sse.py``).
- The Gemini fake (Gemini API and Vertex) reports, per call, 10 text and 1290 image
  tokens in and 10 text and 1290 image tokens out; the gateway makes one call per
  image.
- The BFL fake answers FLUX.2 with an image of the asked width and height, billed per
  started megapixel (1,000,000 pixels) after the first; FLUX.2 [pro] also bills each
  started input megapixel. Edits here send one 1024x1024 PNG.
- xAI, Stability and FLUX Kontext bill per image (and xAI 2.0 per input image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import openai
import pytest

from proxy.catalogue.load import Catalogue
from tests.conftest import StartGateway
from tests.images import png

INPUT = png(1024, 1024)


@dataclass(frozen=True)
class Case:
    kind: str  # the fake provider type
    model: str  # as the client names it
    gen: str | None  # USD for GEN_ARGS (plus ``args``), by hand; None: cannot generate
    edit: str | None  # USD for one edit of INPUT (plus ``args``); None: cannot edit
    args: dict[str, Any] = field(default_factory=dict)
    section: dict[str, Any] | None = None
    key: str = ""  # the catalogue row, when not "<kind>/<model id>"
    n: int = 2  # images per generation (edits and streamed generations: 1)
    one: str | None = None  # USD for a generation of 1 (default: half of ``gen``)

    @property
    def row(self) -> str:
        return self.key or self.model


# gpt-image-2 family: $5 text in, $8 image in, $30 image out per 1M tokens.
#   generation of 2: (10 x 5 + 40 x 8 + 2000 x 30) / 1M = 0.06037
#   edit of 1:       (10 x 5 + 40 x 8 + 1000 x 30) / 1M = 0.03037
_GPT2 = ("0.06037", "0.03037")
# Azure's rows carry no shutdown (Azure retires on its own dates, not OpenAI's).
AZURE = {"deployments": {
    "house": "gpt-image-2",
    "one-five": "gpt-image-1.5",  # retired-id: on OpenAI; Azure's row is active
    "one": "gpt-image-1",  # retired-id: on OpenAI; Azure's row is active
    "mini": "gpt-image-1-mini",  # retired-id: on OpenAI; Azure's row is active
}}  # fmt: skip
# Gemini, per call: 10 x text_in + 1290 x image_in + 10 x text_out + 1290 x image_out.
#   3 pro ($2/$2/$12/$120):     20 + 2580 + 120 + 154800 = 157520 -> 0.15752
#   3.1 flash ($.5/$.5/$3/$60): 5 + 645 + 30 + 77400 = 78080 -> 0.07808
#   nano-banana-2.1 ($1.5/$1.5/$7.5/$30): 15 + 1935 + 75 + 38700 -> 0.040725
#   3.1 flash lite ($.25/$.25/$1.5/$30): 2.5 + 322.5 + 15 + 38700 -> 0.03904
# FLUX.2 at 1920x1080 (2,073,600 px: the first MP and 2 more started):
#   klein-4b 0.014 + 2 x 0.001 = 0.016; klein-9b 0.015 + 2 x 0.002 = 0.019;
#   pro 0.03 + 2 x 0.015 = 0.06; max 0.07 + 2 x 0.03 = 0.13.
# FLUX.2 [flex] publishes no price past the first MP: 992x992 (984,064 px) = $0.05.
# FLUX.2 [pro] edit: output 1920x1080 $0.06 + the 1024x1024 input (1,048,576 px, 2
# started MP) x $0.015 = $0.09.
WIDE = {"size": "1920x1080"}
CASES = [
    *(Case("openai", f"openai/{m}", *_GPT2, args={"quality": "low"}, one=_GPT2[1])
      for m in ("gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-2.5-flare",
                "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.5-sunburst",
                "gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.6-sunburst",
                "gpt-image-2.6-flare")),
    Case("azure", "azure/house", *_GPT2, section=AZURE, key="azure/gpt-image-2",
         one=_GPT2[1]),
    # The one-five deployment ($5/$8/$32): 50 + 320 + 2000 x 32 | 1000 x 32.
    Case("azure", "azure/one-five", "0.06437", "0.03237", section=AZURE,
         key="azure/" + AZURE["deployments"]["one-five"], one="0.03237"),
    # The one deployment ($5/$10/$40): 50 + 400 + 80000 | 40000.
    Case("azure", "azure/one", "0.08045", "0.04045", section=AZURE,
         key="azure/" + AZURE["deployments"]["one"], one="0.04045"),
    # The mini deployment ($2/$2.5/$8): 20 + 100 + 16000 | 8000.
    Case("azure", "azure/mini", "0.01612", "0.00812", section=AZURE,
         key="azure/" + AZURE["deployments"]["mini"], one="0.00812"),
    Case("google", "google/gemini-3-pro-image", "0.31504", "0.15752"),
    Case("google", "google/gemini-3.1-flash-image", "0.15616", "0.07808"),
    Case("google", "google/gemini-nano-banana-2.1", "0.08145", "0.040725"),
    Case("google", "google/gemini-3.1-flash-lite-image", "0.07808", "0.03904"),
    Case("vertex", "vertex/gemini-3-pro-image", "0.31504", "0.15752"),
    Case("vertex", "vertex/gemini-3.1-flash-image", "0.15616", "0.07808"),
    # xAI 2.0: 2k/medium $0.08 per image (x 2), an edit of 1 plus $0.01 per input.
    Case("xai", "xai/grok-imagine-image-2.0", "0.16", "0.09",
         args={"quality": "medium", "extra_body": {"resolution": "2k"}}),
    # grok-imagine-image: $0.02 per image, any resolution. Its edits (and those of
    # FLUX.2 klein, max and flex) are charged for their inputs at a rate that is not
    # published: null (UNPRICED below), never the output price alone.
    Case("xai", "xai/grok-imagine-image", "0.04", None),
    Case("bfl", "bfl/flux-2-klein-4b", "0.032", None, args=WIDE),
    Case("bfl", "bfl/flux-2-klein-9b", "0.038", None, args=WIDE),
    Case("bfl", "bfl/flux-2-pro", "0.12", "0.09", args=WIDE),
    Case("bfl", "bfl/flux-2-max", "0.26", None, args=WIDE),
    Case("bfl", "bfl/flux-2-flex", "0.1", None, args={"size": "992x992"}),
    # Kontext: 4 and 8 credits of $0.01 per image; FLUX1.1 [pro] 4 credits.
    Case("bfl", "bfl/flux-kontext-pro", "0.08", "0.04"),
    Case("bfl", "bfl/flux-kontext-max", "0.16", "0.08"),
    Case("bfl", "bfl/flux-pro-1.1", "0.08", None),
    # Stability: credits of $0.01 per image (generation only).
    Case("stabilityai", "stabilityai/ultra", "0.16", None),
    Case("stabilityai", "stabilityai/core", "0.06", None),
    Case("stabilityai", "stabilityai/sd3.5-large", "0.13", None),
    Case("stabilityai", "stabilityai/sd3.5-large-turbo", "0.08", None),
    Case("stabilityai", "stabilityai/sd3.5-medium", "0.07", None),
]  # fmt: skip
# Rows with no published price: their cost is null (checked below), never a guess.
UNPRICED = [  # (fake, model, whether the edit takes a mask)
    ("stabilityai", "stabilityai/inpaint", True),
    ("stabilityai", "stabilityai/erase", True),
    ("stabilityai", "stabilityai/search-and-replace", False),
    ("replicate", "replicate/black-forest-labs/flux-kontext-pro", False),
    ("bfl", "bfl/flux-pro-1.0-fill", True),
    # Input images charged at an unpublished rate (catalog.yaml: the surcharge is null).
    ("xai", "xai/grok-imagine-image", False),
    ("bfl", "bfl/flux-2-klein-4b", False),
    ("bfl", "bfl/flux-2-klein-9b", False),
    ("bfl", "bfl/flux-2-max", False),
    ("bfl", "bfl/flux-2-flex", False),
]


def _cases() -> list[Any]:
    out = []
    for case in CASES:
        for op, usd in (("generate", case.gen), ("edit", case.edit)):
            if usd is None:
                continue
            out.append(pytest.param(case, op, False, usd, id=f"{case.model}-{op}"))
            if op == "generate":  # streamed: one image
                usd = case.one or str(Decimal(usd) / 2)
            name = f"{case.model}-{op}-stream"
            out.append(pytest.param(case, op, True, usd, id=name))
    return out


async def _cost(client: openai.AsyncOpenAI, case: Case, op: str, stream: bool) -> Any:
    args = dict(case.args)
    extra = args.pop("extra_body", {})
    if op == "generate":
        args["n"] = 1 if stream else case.n
    call: Any = (
        client.images.generate(
            model=case.model,
            prompt="a lighthouse",
            **args,
            extra_body=extra,
            stream=stream,
        )
        if op == "generate"
        else client.images.edit(
            model=case.model,
            prompt="a lighthouse",
            image=[("in.png", INPUT, "image/png")],
            extra_body=extra,
            stream=stream,
            **args,
        )
    )
    answer = await call
    if not stream:
        return (answer.model_extra or {}).get("cost")
    # Every completed event carries the cost of its image; they add up.
    costs = [
        (event.model_extra or {}).get("cost")
        async for event in answer
        if event.type.endswith(".completed")
    ]
    assert costs, "no completed event"
    if len(costs) > 1 and None not in costs:
        return sum(costs)
    return costs[-1]


@pytest.mark.parametrize(("case", "op", "stream", "usd"), _cases())
async def test_cost_matches_the_hand_computation(
    start_gateway: StartGateway, case: Case, op: str, stream: bool, usd: str
) -> None:
    gw = await start_gateway(case.kind, section=case.section)
    cost = await _cost(gw.sdk(), case, op, stream)
    assert cost is not None, case.model
    assert cost == pytest.approx(float(usd), rel=1e-3), (case.model, op, stream)


@pytest.mark.parametrize(("kind", "model", "mask"), UNPRICED)
async def test_unpublished_prices_answer_null(
    start_gateway: StartGateway, kind: str, model: str, mask: bool
) -> None:
    gw = await start_gateway(kind)
    extra: dict[str, Any] = {}
    if mask:
        extra["mask"] = ("m.png", png(1024, 1024, alpha=0), "image/png")
    answer = await gw.sdk().images.edit(
        model=model,
        prompt="a lighthouse",
        image=[("in.png", INPUT, "image/png")],
        extra_body={"search_prompt": "sky"} if "search" in model else None,
        **extra,
    )
    assert (answer.model_extra or {}).get("cost", "absent") is None


def test_every_published_price_has_a_case() -> None:
    """The cases cover every row a request can use that has a price to compute."""
    cat = Catalogue.load_default()
    covered = {c.row for c in CASES}
    for key, entry in cat.items():
        price = entry.price
        if price is None or cat.status(key) == "shutdown":
            continue
        caps = entry.capabilities
        if caps is not None and not caps.adapter_supported:
            continue
        published = (
            (price.tokens is not None and price.tokens.image_out is not None)
            or (price.per_image is not None
                and any(v is not None for v in price.per_image.table.values()))
            or (price.per_megapixel is not None and price.per_megapixel.first is not None)
            or (price.credits is not None and price.credits.count is not None)
        )  # fmt: skip
        assert published is (key in covered), key
