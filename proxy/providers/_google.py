"""What the Gemini API and Vertex AI share: the Gemini image models' request and reply
(``generateContent``), and Google's error envelope.

``{"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT",
"details": [{"@type": "...ErrorInfo", "reason": "API_KEY_INVALID"}]}}``

Gemini: input images travel inline as base64, the prompt as a text part after them;
``size`` becomes ``imageConfig.aspectRatio`` / ``imageSize``. No mask, no native ``n``.
Safety blocks arrive as HTTP 200 (``promptFeedback.blockReason`` or a candidate
``finishReason``) and become a 400 ``moderation_blocked`` carrying Google's reason.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec

from proxy.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamRejected,
    from_upstream_status,
)
from proxy.models import EditJob, TokenDetails, Usage
from proxy.providers import _inputs, _replies
from proxy.providers._prepare import Prepared, image_b64
from proxy.providers._results import Encoded
from proxy.providers._sizes import (
    GEMINI_ASPECT_RATIOS,
    aspect_ratio,
    gemini_image_size,
)
from proxy.providers.base import Capabilities
from proxy.upstream import UpstreamResponse

# Inline data is capped at 20 MB per request; up to 14 reference images (Gemini 3).
GEMINI_CAPABILITIES = Capabilities(
    max_images=14, mask=False, native_n=False, max_image_bytes=20 * 1024 * 1024
)

# Google answers a bad or expired key with HTTP 400; these reasons mean our credentials.
_CREDENTIAL_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


class _Detail(msgspec.Struct):
    reason: str | None = None


class _Error(msgspec.Struct):
    message: str | None = None
    status: str | None = None
    details: list[_Detail] = []


class _Envelope(msgspec.Struct):
    error: _Error | None = None


_envelope = msgspec.json.Decoder(_Envelope)


def error_for(provider: str, resp: UpstreamResponse) -> UpstreamError:
    """Map a non-2xx Google reply, keeping its message and status name for 4xx."""
    err = _Error()
    with contextlib.suppress(msgspec.DecodeError):
        err = _envelope.decode(resp.body).error or err
    status = resp.status
    if any(d.reason in _CREDENTIAL_REASONS for d in err.details):
        status = 401
    return from_upstream_status(
        provider,
        status,
        message=err.message,
        retry_after=resp.headers.get("Retry-After"),
        code=err.status,
    )


# finishReason values that mean the model would not (or could not) show an image.
_SAFETY_FINISH = frozenset(
    {
        "SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION",
        "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
    }
)  # fmt: skip


class _Camel(msgspec.Struct, rename="camel"):
    pass


class _InlineData(_Camel):
    data: str
    mime_type: str = "image/png"


class _Part(_Camel):
    text: str | None = None
    inline_data: _InlineData | None = None
    thought: bool = False


class _Content(_Camel):
    parts: list[_Part] = []


class _Candidate(_Camel):
    content: _Content | None = None
    finish_reason: str | None = None
    finish_message: str | None = None


class _Feedback(_Camel):
    block_reason: str | None = None
    block_reason_message: str | None = None


class _Modality(_Camel):
    modality: str = ""
    token_count: int = 0


class _UsageMetadata(_Camel):
    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    thoughts_token_count: int = 0
    total_token_count: int | None = None
    prompt_tokens_details: list[_Modality] | None = None
    candidates_tokens_details: list[_Modality] | None = None


class _Reply(_Camel):
    candidates: list[_Candidate] = []
    prompt_feedback: _Feedback | None = None
    usage_metadata: _UsageMetadata | None = None


_reply = msgspec.json.Decoder(_Reply)


def generation_config(job: EditJob, provider: str) -> dict[str, Any]:
    image_config: dict[str, str] = {}
    ratio = aspect_ratio(job.size, GEMINI_ASPECT_RATIOS, provider=provider)
    if ratio is not None:
        image_config["aspectRatio"] = ratio
    tier = gemini_image_size(job.size, provider=provider, model=job.model)
    if tier is not None:
        image_config["imageSize"] = tier
    config: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
    if image_config:
        config["imageConfig"] = image_config
    return config


def build_body(job: EditJob, prepared: Prepared, provider: str) -> bytes:
    parts: list[dict[str, Any]] = []
    for i, image in enumerate(job.images):
        data = image_b64(job, prepared, i, provider=provider)
        mime = getattr(image, "content_type", "image/png")
        parts.append({"inlineData": {"mimeType": mime, "data": data}})
    parts.append({"text": job.prompt})
    extra = dict(job.extra)
    extra_config = extra.pop("generationConfig", {})
    if not isinstance(extra_config, dict):
        raise InvalidRequest(
            "'generationConfig' must be an object", param="generationConfig"
        )
    body = _inputs.merge_extra({"contents": [{"role": "user", "parts": parts}]}, extra)
    # candidateCount would multiply the images of each call past `n`, which the
    # proxy fans out itself.
    body["generationConfig"] = _inputs.merge_extra(
        generation_config(job, provider),
        extra_config,
        reserved=("candidateCount",),
        where="generationConfig.",
    )
    return msgspec.json.encode(body)


def _tokens(details: list[_Modality] | None) -> TokenDetails | None:
    if details is None:
        return None
    text = sum(d.token_count for d in details if d.modality in ("TEXT", "AUDIO"))
    image = sum(d.token_count for d in details if d.modality == "IMAGE")
    return TokenDetails(text_tokens=text, image_tokens=image)


def usage_from(meta: _UsageMetadata | None) -> Usage | None:
    """Gemini's usageMetadata as OpenAI usage; thinking tokens bill as text output."""
    if meta is None:
        return None
    out = _tokens(meta.candidates_tokens_details)
    if out is not None and meta.thoughts_token_count:
        out = TokenDetails(
            text_tokens=(out.text_tokens or 0) + meta.thoughts_token_count,
            image_tokens=out.image_tokens,
        )
    return Usage(
        input_tokens=meta.prompt_token_count,
        output_tokens=(meta.candidates_token_count or 0) + meta.thoughts_token_count,
        total_tokens=meta.total_token_count,
        input_tokens_details=_tokens(meta.prompt_tokens_details),
        output_tokens_details=out,
    )


def _blocked(provider: str, reason: str, detail: str | None) -> UpstreamRejected:
    suffix = f": {detail}" if detail else ""
    return UpstreamRejected(
        f"provider '{provider}' blocked the request ({reason}){suffix}",
        provider=provider,
        code="moderation_blocked",
    )


def parse_reply(provider: str, body: bytes) -> tuple[list[Encoded], Usage | None]:
    """The images of a 200 reply, or the 400 a block or an image-less answer means."""
    reply = _replies.decode(provider, body, _reply)
    feedback = reply.prompt_feedback
    if feedback is not None and feedback.block_reason:
        raise _blocked(provider, feedback.block_reason, feedback.block_reason_message)
    images: list[Encoded] = []
    texts: list[str] = []
    for cand in reply.candidates:
        for part in cand.content.parts if cand.content else []:
            if part.inline_data is not None and not part.thought:
                images.append(
                    Encoded(part.inline_data.data, part.inline_data.mime_type)
                )
            elif part.text and not part.thought:
                texts.append(part.text)
    if images:
        return images, usage_from(reply.usage_metadata)
    reason = next((c.finish_reason for c in reply.candidates if c.finish_reason), None)
    message = next(
        (c.finish_message for c in reply.candidates if c.finish_message), None
    )
    if reason in _SAFETY_FINISH:
        raise _blocked(provider, reason or "", message)
    said = " ".join(texts)[:500]
    raise UpstreamRejected(
        f"provider '{provider}' returned no image (finishReason {reason or 'none'})"
        + (f"; the model said: {said}" if said else ""),
        provider=provider,
        code="no_image_generated",
    )
