"""Gemini image models ("Nano Banana") through the Gemini API's ``generateContent``.

API: https://ai.google.dev/api/generate-content (image generation and editing guide:
https://ai.google.dev/gemini-api/docs/image-generation). The request and reply are
``_google``'s, shared with Gemini on Vertex AI. Deviations from OpenAI: no mask (400 before
sending), no native ``n`` (the proxy makes n calls), ``quality``, ``background`` and
``output_format`` are not Gemini API options and are ignored. Safety blocks arrive as
HTTP 200 (``promptFeedback.blockReason`` or a candidate ``finishReason``) and become a
400 ``moderation_blocked`` carrying Google's reason. Unknown client fields are merged
into the request body (``generationConfig`` members into ours); one the proxy sets,
and ``candidateCount``, is a 400.
"""

from __future__ import annotations

from typing import ClassVar

from proxy.models import EditJob, EditResult
from proxy.providers import _google, _inputs
from proxy.providers._call import UpstreamCall, compose
from proxy.providers._prepare import Needs, Prepared
from proxy.providers._results import Outputs
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool, StaticKey
from proxy.upstream import Upstream, UpstreamResponse

# Current ids (2026-12): gemini-3.1-flash-image, gemini-3-pro-image and
# gemini-3.1-flash-lite-image. The -preview ids and gemini-2.5-flash-image are shut down.


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="google"):
    base_url: str = "https://generativelanguage.googleapis.com/v1beta"
    api_key_env: str = "GEMINI_API_KEY"
    pool: Pool = Pool()


class GoogleAdapter:
    name: ClassVar[str] = "google"
    capabilities: ClassVar[Capabilities] = _google.GEMINI_CAPABILITIES

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
            _google.build_body(job, prepared, job.provider),
        )

    def parse(self, provider: str, reply: UpstreamResponse) -> Outputs:
        if not reply.ok:
            raise _google.error_for(provider, reply)
        return Outputs(*_google.parse_reply(provider, reply.body))

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        return await compose(self, job, upstream)
