"""Gemini image models ("Nano Banana") through the Gemini API's ``generateContent``.

API: https://ai.google.dev/api/generate-content (image generation and editing guide:
https://ai.google.dev/gemini-api/docs/image-generation). Input images travel inline as
base64, the prompt as a text part after them; ``size`` becomes
``imageConfig.aspectRatio`` / ``imageSize``. Deviations from OpenAI: no mask (400 before
sending), no native ``n`` (the proxy makes n calls), ``quality``, ``background`` and
``output_format`` are not Gemini API options and are ignored. Safety blocks arrive as
HTTP 200 (``promptFeedback.blockReason`` or a candidate ``finishReason``) and become a
400 ``moderation_blocked`` carrying Google's reason. Unknown client fields are merged
into the request body (``generationConfig`` members into ours); one the proxy sets,
and ``candidateCount``, is a 400.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from proxy.errors import InvalidRequest, UpstreamRejected
from proxy.models import EditJob, EditResult, TokenDetails, Usage
from proxy.providers import _google, _inputs, _replies
from proxy.providers._call import UpstreamCall, compose
from proxy.providers._prepare import Needs, Prepared, image_b64
from proxy.providers._results import Encoded, Outputs
from proxy.providers._sizes import (
    GEMINI_ASPECT_RATIOS,
    aspect_ratio,
    gemini_image_size,
)
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool, StaticKey
from proxy.upstream import Upstream, UpstreamResponse


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="google"):
    base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    api_key_env: str = "GEMINI_API_KEY"
    pool: Pool = Pool()


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
    tier = gemini_image_size(job.size, provider=provider)
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


class GoogleAdapter:
    name: ClassVar[str] = "google"
    # Inline data is capped at 20 MB per request; up to 14 reference images (Gemini 3).
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_images=14, mask=False, native_n=False, max_image_bytes=20 * 1024 * 1024
    )

    def __init__(self, config: Config) -> None:
        self._config = config

    def auth(self, key: str) -> Auth:
        return StaticKey("x-goog-api-key", key)

    def needs(self, job: EditJob) -> Needs:
        return Needs(base64=True)

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        # Checked, not just quoted: ..%2F..%2Fx would still take the key elsewhere.
        model = _inputs.model_path(job.model, provider=job.provider)
        return UpstreamCall(
            "POST",
            f"/models/{model}:generateContent",
            {**job.extra_headers, "Content-Type": "application/json"},
            build_body(job, prepared, job.provider),
        )

    def parse(self, provider: str, reply: UpstreamResponse) -> Outputs:
        if not reply.ok:
            raise _google.error_for(provider, reply)
        return Outputs(*parse_reply(provider, reply.body))

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        return await compose(self, job, upstream)
