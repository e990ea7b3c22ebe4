"""Pure pieces: header rules, sniffing, data URLs, pricing, form names, errors."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import pytest

from proxy.accounting import splice
from proxy.catalogue.cost import Facts, cost
from proxy.catalogue.schema import PerImage, Tokens
from proxy.catalogue.schema import Price as CatPrice
from proxy.errors import (
    InvalidRequest,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    from_upstream_status,
)
from proxy.headers import validate_extra_headers
from proxy.images import decode_data_url, sniff
from proxy.models import TokenDetails, Usage
from proxy.parsing import _put_field
from proxy.pricing import PriceTable
from tests.images import jpeg_like, png, webp_like


@pytest.mark.parametrize(
    "name",
    ["Authorization", "PROXY-AUTHORIZATION", "api-key", "X-Api-Key", "x-goog-api-key",
     "X-Key", "Cookie", "set-cookie", "Ocp-Apim-Subscription-Key", "x-amz-security-token",
     "X-Custom-Api-Key", "X-Refresh-Token", "X-Client-Secret", "X-Authenticated-User",
     "X_Api_Key", "x_goog_api_key", "api_key"],
)  # fmt: skip
def test_credential_headers_refused(name: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        validate_extra_headers({name: "v"})
    assert exc.value.param == f"extra_headers.{name}"
    assert exc.value.code == "forbidden_header"


@pytest.mark.parametrize(
    "name",
    ["OpenAI-Organization", "openai-project", "X-Goog-User-Project", "x-goog-request-params",
     "X-Amz-Credential", "X-AMZ-SIGNATURE", "X-Amz-SignedHeaders", "X-Amz-Target",
     "X-Amz-Expires", "x-amz-algorithm", "X-Vertex-AI-LLM-Request-Type",
     # Underscores: servers behind CGI/WSGI-style gateways read them as dashes.
     "OpenAI_Organization", "x_goog_user_project", "X_Amz_Credential"],
)  # fmt: skip
def test_billing_and_signing_headers_refused(name: str) -> None:
    # Each picks who pays for the gateway's key or forges part of a signed request.
    with pytest.raises(InvalidRequest, match=r"billed|signs") as exc:
        validate_extra_headers({name: "v"})
    assert exc.value.param == f"extra_headers.{name}"
    assert exc.value.code == "forbidden_header"


@pytest.mark.parametrize(
    "name",
    ["Forwarded", "X-Forwarded-For", "x-forwarded-host", "X-Real-IP", "Via",
     "X_Forwarded_For", "x_real_ip"],
)  # fmt: skip
def test_client_address_headers_refused(name: str) -> None:
    with pytest.raises(InvalidRequest, match="framing or routing") as exc:
        validate_extra_headers({name: "v"})
    assert exc.value.code == "forbidden_header"


@pytest.mark.parametrize(
    "name",
    ["Host", "content-length", "Transfer-Encoding", "Connection", "Keep-Alive", "Upgrade",
     "TE", "Trailer", "Expect", "Content-Type", "Accept-Encoding"],
)  # fmt: skip
def test_framing_headers_refused(name: str) -> None:
    with pytest.raises(InvalidRequest, match="framing"):
        validate_extra_headers({name: "v"})


@pytest.mark.parametrize(
    ("name", "value"),
    [("X A", "v"), ("X:A", "v"), ("", "v"), ("X-A", "a\rb"), ("X-A", "a\nb"),
     ("X-A", "a\x00"), ("X-A", "\x7f"), ("X-A", "x" * 5000), ("X-A", 3),
     ("X-A", "snow \u2603")],
)  # fmt: skip
def test_malformed_headers_refused(name: str, value: Any) -> None:
    with pytest.raises(InvalidRequest):
        validate_extra_headers({name: value})


def test_ordinary_headers_pass() -> None:
    headers = {"X-Tenant": "a b\tc", "OpenAI-Beta": "x", "Idempotency-Key": "1"}
    assert validate_extra_headers(headers) == headers
    assert validate_extra_headers(None) == {}
    with pytest.raises(InvalidRequest, match="at most"):
        validate_extra_headers({f"X-{i}": "v" for i in range(33)})


def test_sniff() -> None:
    assert sniff(png()) == "image/png"
    assert sniff(jpeg_like()) == "image/jpeg"
    assert sniff(webp_like()) == "image/webp"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert sniff(b"GIF89a") is None
    assert sniff(b"") is None


def test_data_urls() -> None:
    data = png()
    url = f"data:image/png;base64,{base64.b64encode(data).decode()}"
    assert decode_data_url(url, param="p") == data
    assert decode_data_url(url.replace("image/png", "IMAGE/PNG"), param="p") == data
    for bad in ["data:image/png;base64", "data:text/plain;base64,aGk=",
                "data:image/png,aGk=", "data:image/png;base64,a b"]:  # fmt: skip
        with pytest.raises(InvalidRequest):
            decode_data_url(bad, param="p")


def test_token_pricing_matches_hand_computation() -> None:
    rates = Tokens(text_in=5, image_in=8, image_out=30, text_out=10)
    usage = Usage(
        input_tokens=150,
        output_tokens=1100,
        input_tokens_details=TokenDetails(text_tokens=50, image_tokens=100),
        output_tokens_details=TokenDetails(image_tokens=1000, text_tokens=100),
    )
    expected = (50 * 5 + 100 * 8 + 1000 * 30 + 100 * 10) / 1e6
    assert cost(CatPrice(tokens=rates), Facts(1, usage)) == Decimal(str(expected))


def test_pricing_never_invents() -> None:
    tokens = CatPrice(tokens=Tokens(text_in=1, image_in=1, image_out=1))
    split = TokenDetails(text_tokens=1, image_tokens=1)
    assert cost(None, Facts(1, Usage(output_tokens=1))) is None
    assert cost(tokens, Facts(1, None)) is None
    # Input not split into text and image tokens: two rates, cannot price.
    assert cost(tokens, Facts(1, Usage(input_tokens=5))) is None
    # Text output tokens with no text-output price.
    usage = Usage(input_tokens_details=split,
                  output_tokens_details=TokenDetails(text_tokens=3))  # fmt: skip
    assert cost(tokens, Facts(1, usage)) is None
    per_image = CatPrice(per_image=PerImage(by="size", table={"any": 0.04}))
    assert cost(per_image, Facts(3)) == Decimal("0.12")


def test_default_price_table_loads() -> None:
    table = PriceTable.load_default()
    assert "openai/gpt-image-2" in table
    # A row with a price per size (no flat rate) is not in the flat table.
    assert "openai/grok-imagine-image-2.0" not in table


def test_form_field_names() -> None:
    fields: dict[str, Any] = {}
    for name, value in [("a", "1"), ("b[]", "x"), ("b[]", "y"), ("c[d]", "2"),
                        ("e[f][g]", "3"), ("e[f][h]", "4")]:  # fmt: skip
        _put_field(fields, name, value)
    assert fields == {
        "a": "1",
        "b": ["x", "y"],
        "c": {"d": "2"},
        "e": {"f": {"g": "3", "h": "4"}},
    }
    for bad in [("a", "again"), ("a[x]", "v"), ("b[x]", "v"), ("x[]]", "v"),
                ("p[a][b][c][d]", "v"), ("b[][]", "v")]:  # fmt: skip
        with pytest.raises(InvalidRequest):
            _put_field(fields, *bad)


def test_splice() -> None:
    assert splice(b'{"a":1}', b'"b":2') == b'{"a":1,"b":2}'
    assert splice(b"{ }\n", b'"b":2') == b'{"b":2}'


@pytest.mark.parametrize(
    ("status", "cls", "http"),
    [(400, UpstreamRejected, 400), (404, UpstreamRejected, 404), (422, UpstreamRejected, 422),
     (401, UpstreamAuthError, 502), (403, UpstreamAuthError, 502),
     (429, UpstreamRateLimited, 429), (408, UpstreamTimeout, 504), (504, UpstreamTimeout, 504),
     (500, UpstreamUnavailable, 502), (503, UpstreamUnavailable, 502)],
)  # fmt: skip
def test_status_classification(status: int, cls: type, http: int) -> None:
    err = from_upstream_status(
        "p", status, message="provider said sk-secret", retry_after="3"
    )
    assert type(err) is cls
    assert err.status == http
    if cls in (UpstreamAuthError, UpstreamUnavailable, UpstreamTimeout):
        assert "sk-secret" not in err.message
    if cls is UpstreamRateLimited:
        assert err.headers == {"Retry-After": "3"}
