"""Each provider's cost from its published rates, computed by hand to the cent
fraction, through the catalogue and the cost engine (``proxy.catalogue.cost``).

The rates are the catalogue's (proxy/catalog.yaml, sources in each row); the hand
computation restates them, so a changed rate fails here until the row is re-checked.
"""

from __future__ import annotations

import base64
from decimal import Decimal

import msgspec
import pytest

from proxy.catalogue.cost import Facts, cost
from proxy.catalogue.load import Catalogue
from proxy.catalogue.measure import output_sizes
from proxy.catalogue.schema import Credits, PerImage, Price
from proxy.models import TokenDetails, Usage
from tests.images import flat_png, jpeg_like, png

CAT = Catalogue.load_default()


def _price(key: str) -> Price | None:
    row = CAT.get(key)
    assert row is not None, key
    return row.price


def _usage(text_in: int, image_in: int, image_out: int, text_out: int = 0) -> Usage:
    return Usage(
        input_tokens_details=TokenDetails(text_tokens=text_in, image_tokens=image_in),
        output_tokens_details=TokenDetails(
            text_tokens=text_out, image_tokens=image_out
        ),
    )


def _exact(key: str, facts: Facts, expected: str) -> None:
    assert cost(_price(key), facts) == Decimal(expected), key


def test_openai_tokens() -> None:
    # gpt-image-2: $5 text in, $8 image in, $30 image out, $10 text out per 1M.
    # 100*5 + 1000*8 + 7024*30 + 20*10 = 500 + 8000 + 210720 + 200 = 219420 / 1M
    usage = _usage(100, 1000, 7024, 20)
    _exact("openai/gpt-image-2", Facts(1, usage), "0.21942")
    _exact("openai/gpt-image-2-2026-04-21", Facts(1, usage), "0.21942")
    # gpt-image-2.6-sunburst has no published text-out rate: text out is unknown.
    assert cost(_price("openai/gpt-image-2.6-sunburst"), Facts(1, usage)) is None
    # Without text out: 500 + 8000 + 210720 = 219220
    _exact("openai/gpt-image-2.6-flare", Facts(1, _usage(100, 1000, 7024)), "0.21922")
    _exact("openai/gpt-image-2.5-flare", Facts(1, _usage(100, 1000, 7024)), "0.21922")


def test_azure_tokens() -> None:
    # The deployment's model gpt-image-2: 10*5 + 0*8 + 1756*30 = 50 + 52680 = 52730
    _exact("azure/gpt-image-2", Facts(1, _usage(10, 0, 1756)), "0.05273")


def test_gemini_ga_ids_by_tokens() -> None:
    # gemini-3-pro-image: $2 in (text and image), $120 image out, $12 text out.
    # 50*2 + 560*2 + 1120*120 + 300*12 = 100 + 1120 + 134400 + 3600 = 139220
    usage = _usage(50, 560, 1120, 300)
    _exact("google/gemini-3-pro-image", Facts(1, usage), "0.13922")
    # gemini-3.1-flash-image: $0.50 in, $60 image out, $3 text out.
    # 20*0.5 + 1120*0.5 + 1680*60 + 0 = 10 + 560 + 100800 = 101370
    _exact("google/gemini-3.1-flash-image", Facts(1, _usage(20, 1120, 1680)), "0.10137")
    _exact("vertex/gemini-3.1-flash-image", Facts(1, _usage(20, 1120, 1680)), "0.10137")
    # gemini-3.1-flash-lite-image: $0.25 in, $30 out; one 1K image (1120 tokens).
    # 40*0.25 + 1120*30 = 10 + 33600 = 33610
    _exact(
        "google/gemini-3.1-flash-lite-image", Facts(1, _usage(40, 0, 1120)), "0.03361"
    )


def test_flux2_per_megapixel_from_real_sizes() -> None:
    # flux-2-pro: $0.03 the first MP, $0.015 each further started MP.
    _exact("bfl/flux-2-pro", Facts(1, sizes=[(1000, 1000)]), "0.03")
    # 1024x1024 = 1,048,576 px: two started MP.
    _exact("bfl/flux-2-pro", Facts(1, sizes=[(1024, 1024)]), "0.045")
    # 1920x1080 = 2,073,600 px: three MP; and a second image of 1 MP.
    _exact("bfl/flux-2-pro", Facts(2, sizes=[(1920, 1080), (800, 600)]), "0.09")
    # klein 4B: $0.014 + $0.001 per extra MP; 2048x2048 = 4,194,304 px = 5 MP.
    _exact("bfl/flux-2-klein-4b", Facts(1, sizes=[(2048, 2048)]), "0.018")
    _exact("bfl/flux-2-klein-9b", Facts(1, sizes=[(1024, 1024)]), "0.017")
    _exact("bfl/flux-2-max", Facts(1, sizes=[(1024, 1024)]), "0.10")
    # flex: the extra rate is disputed (null): 1 MP prices, more does not.
    _exact("bfl/flux-2-flex", Facts(1, sizes=[(1000, 1000)]), "0.05")
    assert cost(_price("bfl/flux-2-flex"), Facts(1, sizes=[(1024, 1024)])) is None
    # Sizes unknown (a provider URL): no guess.
    assert cost(_price("bfl/flux-2-pro"), Facts(1, sizes=None)) is None
    # Input megapixels are billed on pro: an input the gateway could not measure
    # leaves the edit unpriced; measured, each started input MP is $0.015.
    assert (
        cost(_price("bfl/flux-2-pro"), Facts(1, sizes=[(1000, 1000)], inputs=1)) is None
    )
    measured = Facts(1, sizes=[(1000, 1000)], inputs=2,
                     input_sizes=[(1024, 1024), (500, 500)])  # fmt: skip
    # $0.03 (1 MP out) + (2 + 1) started input MP x $0.015.
    _exact("bfl/flux-2-pro", measured, "0.075")


def test_kontext_and_stability_credits() -> None:
    _exact("bfl/flux-kontext-pro", Facts(1, inputs=1), "0.04")  # 4 credits x $0.01
    _exact("bfl/flux-kontext-max", Facts(1, inputs=2), "0.08")
    _exact("stabilityai/ultra", Facts(1), "0.08")
    _exact("stabilityai/sd3.5-large", Facts(2), "0.130")  # 6.5 credits x 2
    # Edit endpoints' credit counts are not published: null, never a guess.
    assert cost(_price("stabilityai/inpaint"), Facts(1, inputs=1)) is None


def test_xai_2_with_its_input_image_charge() -> None:
    # 2k/medium: $0.08 per output image, plus $0.01 per input image.
    facts = Facts(2, inputs=3, quality="medium", resolution="2k")
    _exact("xai/grok-imagine-image-2.0", facts, "0.19")  # 2*0.08 + 3*0.01
    _exact(
        "xai/grok-imagine-image-2.0", Facts(1, quality="low", resolution="1k"), "0.04"
    )
    # 1k/medium is not published: null.
    assert (
        cost(
            _price("xai/grok-imagine-image-2.0"),
            Facts(1, quality="medium", resolution="1k"),
        )
        is None
    )
    # grok-imagine-image: $0.02 whatever the resolution.
    _exact("xai/grok-imagine-image", Facts(3), "0.06")


def test_unpublished_prices_stay_null() -> None:
    for key in ("replicate/black-forest-labs/flux-kontext-pro", "bfl/flux-pro-1.0-fill",
                "amazon/stability.sd3-5-large-v1:0"):  # fmt: skip
        assert cost(_price(key), Facts(1, inputs=1)) is None, key


def test_other_shapes() -> None:
    by_tier = Price(per_image=PerImage(by="size_quality", table={"1024x1024/hd": 0.08}))
    assert cost(by_tier, Facts(2, size="1024x1024", quality="hd")) == Decimal("0.16")
    assert cost(by_tier, Facts(2, size="1024x1024")) is None
    per_call = Price(per_prediction=0.055, per_input_image=0.002)
    # A fan-out of 3 calls, each sending 2 input images: 3*0.055 + 3*2*0.002
    assert cost(per_call, Facts(3, inputs=2, calls=3)) == Decimal("0.177")
    assert cost(Price(per_second=0.001), Facts(1)) is None  # run time unknown
    assert (
        cost(Price(credits=Credits(count=None, usd_per_credit=0.01)), Facts(1)) is None
    )


def test_output_sizes_from_headers_only() -> None:
    big = flat_png(1920, 1080)
    body = msgspec.json.encode({"data": [
        {"b64_json": base64.b64encode(big).decode()},
        {"url": "data:image/png;base64," + base64.b64encode(png(8, 4)).decode()},
    ]})  # fmt: skip
    assert output_sizes(body) == [(1920, 1080), (8, 4)]
    assert output_sizes(b'{"data":[{"url":"https://x/y.png"}]}') is None
    no_frame = base64.b64encode(jpeg_like()).decode()
    assert output_sizes(b'{"data":[{"b64_json":"' + no_frame.encode() + b'"}]}') is None
    assert output_sizes(b'{"data":[]}') == []


@pytest.mark.parametrize("key", [k for k, r in CAT.items() if r.price is not None])
def test_every_price_row_is_one_shape(key: str) -> None:
    price = _price(key)
    assert price is not None
    assert price.shape() is not None, key


def test_an_input_charge_at_an_unpublished_rate_leaves_edits_unpriced() -> None:
    # catalog.yaml: absent surcharge = none charged; null = charged, rate unknown.
    # Before, a null surcharge counted as none and an edit's cost was understated.
    flat = PerImage(by="resolution", table={"any": 0.02})
    unknown = Price(per_image=flat, per_input_image=None)
    assert cost(unknown, Facts(2)) == Decimal("0.04")  # no inputs: exact
    assert cost(unknown, Facts(1, inputs=1)) is None
    assert cost(Price(per_image=flat), Facts(1, inputs=3)) == Decimal("0.02")
    assert cost(_price("xai/grok-imagine-image"), Facts(1, inputs=1)) is None
    assert cost(_price("xai/grok-imagine-image"), Facts(3)) == Decimal("0.06")
