"""Pure request/reply translation of the Gemini, Vertex and Stability adapters."""

from __future__ import annotations

import msgspec
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import (
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
)
from proxy.models import EditJob, TokenDetails, Usage
from proxy.providers import _google, stabilityai
from proxy.providers._results import Encoded
from proxy.upstream import UpstreamResponse


def _job(**kw: object) -> EditJob:
    fields: dict[str, object] = {"operation": "generate", "provider": "p",
                                 "model": "m", "prompt": "x", "source": "json"}  # fmt: skip
    fields.update(kw)
    return EditJob(**fields)  # type: ignore[arg-type]


def _resp(status: int, body: object, **headers: str) -> UpstreamResponse:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return UpstreamResponse(status, CIMultiDictProxy(CIMultiDict(headers)), raw)


def test_gemini_usage_by_modality() -> None:
    meta = _google._UsageMetadata(
        prompt_token_count=300,
        candidates_token_count=1300,
        thoughts_token_count=50,
        total_token_count=1650,
        prompt_tokens_details=[_google._Modality("TEXT", 40), _google._Modality("IMAGE", 260)],
        candidates_tokens_details=[_google._Modality("IMAGE", 1290),
                                   _google._Modality("TEXT", 10)],
    )  # fmt: skip
    assert _google.usage_from(meta) == Usage(
        input_tokens=300,
        output_tokens=1350,
        total_tokens=1650,
        input_tokens_details=TokenDetails(text_tokens=40, image_tokens=260),
        output_tokens_details=TokenDetails(text_tokens=60, image_tokens=1290),
    )
    assert _google.usage_from(None) is None


def test_gemini_images_keep_their_base64_and_type() -> None:
    body = {"candidates": [{"content": {"parts": [
        {"text": "ok"}, {"inlineData": {"mimeType": "image/jpeg", "data": "QUJD"}}]}}]}  # fmt: skip
    images, usage = _google.parse_reply("google", msgspec.json.encode(body))
    assert images == [Encoded("QUJD", "image/jpeg")]
    assert usage is None


def test_gemini_garbage_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        _google.parse_reply("google", b"<html>")


def test_gemini_generation_config() -> None:
    assert _google.generation_config(_job(size="1024x1792"), "google") == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "9:16", "imageSize": "2K"},
    }


def test_google_error_keeps_message_and_status_name() -> None:
    err = _google.error_for(
        "google",
        _resp(
            400,
            {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}},
        ),
    )
    assert isinstance(err, UpstreamRejected)
    assert err.message == "bad"
    assert err.code == "INVALID_ARGUMENT"
    assert isinstance(
        _google.error_for("google", _resp(403, b"nope")), UpstreamAuthError
    )


def test_stability_endpoint_choice() -> None:
    edit = stabilityai.endpoint_for(_job(operation="edit", model="erase"), "s")
    assert edit == stabilityai.Endpoint("/v2beta/stable-image/edit/erase", False, True)
    sd3 = stabilityai.endpoint_for(_job(model="sd3.5-medium"), "s")
    assert sd3.path == "/v2beta/stable-image/generate/sd3"


def test_stability_errors() -> None:
    body = {
        "id": "1",
        "name": "invalid_prompt",
        "errors": ["prompt: too long", "seed: bad"],
    }
    err = stabilityai.error_for("s", _resp(400, body))
    assert isinstance(err, UpstreamRejected)
    assert err.message == "prompt: too long; seed: bad"
    assert err.code == "invalid_prompt"
    limited = stabilityai.error_for("s", _resp(429, b"", **{"Retry-After": "3"}))
    assert isinstance(limited, UpstreamRateLimited)
    assert limited.headers == {"Retry-After": "3"}
    denied = stabilityai.error_for("s", _resp(403, {"name": "forbidden", "errors": []}))
    assert isinstance(denied, UpstreamAuthError)
