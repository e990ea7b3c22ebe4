"""AWS Bedrock image models through ``InvokeModel``, signed with SigV4.

API: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html
and https://docs.aws.amazon.com/nova/latest/userguide/image-gen-access.html
``POST /model/{modelId}/invoke`` with a JSON body in the model's own schema:
- Amazon Nova Canvas (``amazon.nova-canvas-v1:0``: Legacy, end of life 2026-09-30, and
  AWS names no Amazon image model after it; kept for accounts with extended access) and
  Titan Image: an edit with a mask is ``INPAINTING`` (Nova
  marks the area to change in black, so OpenAI's mask is converted and inverted), or
  ``OUTPAINTING`` when ``task_type: OUTPAINTING`` is sent (Nova changes the white area);
  an edit without a mask is ``IMAGE_VARIATION`` (1-5 images), or ``INPAINTING`` driven
  by a ``maskPrompt``. ``n`` is ``numberOfImages`` (at most 5); ``size`` is
  ``width``/``height`` (multiples of 16, 320-4096) where the task takes one.
- Stability models on Bedrock: one image per call (the handler fans ``n`` out); edits
  send the first image (and a white-edit mask); sd3 models run ``image-to-image``.
Unknown client fields go into the task's parameters (e.g. ``negativeText``,
``similarityStrength``), ``seed``/``cfgScale`` into ``imageGenerationConfig``.
Credentials come from the standard AWS chain, not from one key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from proxy.errors import InvalidRequest, UpstreamRejected
from proxy.models import EditJob, EditResult
from proxy.providers import _aws, _inputs, _nova, _replies, _sizes
from proxy.providers._call import UpstreamCall, compose
from proxy.providers._prepare import Needs, Prepared, image_b64
from proxy.providers._results import Encoded, Outputs
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool
from proxy.upstream import Upstream, UpstreamResponse

_PNG_JPEG = frozenset({"image/png", "image/jpeg"})
NOVA = Capabilities(max_images=5, image_types=_PNG_JPEG)
# Stability on Bedrock: one image in, one image out per call.
STABILITY = Capabilities(max_images=1, native_n=False, image_types=_PNG_JPEG)


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="amazon"):
    region: str = "us-east-1"
    # Empty: https://bedrock-runtime.{region}.amazonaws.com
    base_url: str = ""
    # Informational: the first link of the AWS chain; profiles and roles work too.
    api_key_env: str = "AWS_ACCESS_KEY_ID"
    profile: str | None = None
    pool: Pool = Pool()

    def __post_init__(self) -> None:
        if not self.base_url:
            url = f"https://bedrock-runtime.{self.region}.amazonaws.com"
            msgspec.structs.force_setattr(self, "base_url", url)


def stability_body(job: EditJob, images: list[str], mask: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {**job.extra, "prompt": job.prompt}
    if job.output_format in ("png", "jpeg", "webp"):
        body["output_format"] = job.output_format
    sd3 = ".sd3" in job.model or job.model.startswith("sd3")
    if job.operation == "generate" or not images:
        ratio = _sizes.aspect_ratio(
            job.size, _sizes.STABILITY_ASPECT_RATIOS, provider="amazon"
        )
        if ratio is not None:
            body["aspect_ratio"] = ratio
        if sd3:
            body["mode"] = "text-to-image"
        return body
    if len(images) > 1:
        raise InvalidRequest(
            f"model '{job.model}' edits one image; got {len(images)}", param="images"
        )
    body["image"] = images[0]
    if mask is not None:
        body["mask"] = mask
    if sd3:
        body.setdefault("strength", 0.7)
        body["mode"] = "image-to-image"
    return body


class _Reply(msgspec.Struct):
    images: list[str] = []
    finish_reasons: list[str | None] = []
    error: str | None = None


_reply = msgspec.json.Decoder(_Reply)


def parse_images(provider: str, body: bytes) -> list[str]:
    """The base64 images of a Bedrock image reply; a filtered image is a 400."""
    try:
        reply = _reply.decode(body)
    except msgspec.DecodeError:
        reply = _Reply()
    reasons = [r for r in reply.finish_reasons if r]
    if reply.error or reasons:
        raise UpstreamRejected(
            reply.error or f"provider '{provider}' filtered the image: {reasons[0]}",
            provider=provider,
            code="content_filtered",
        )
    if not reply.images:
        raise _replies.unexpected(provider)
    return reply.images


class _Error(msgspec.Struct):
    message: str | None = None
    Message: str | None = None


def error_message(body: bytes) -> str | None:
    """Bedrock's error text (``{"message": ...}``, ``Message`` from some services)."""
    try:
        err = msgspec.json.decode(body, type=_Error)
    except msgspec.DecodeError:
        return None
    return err.message or err.Message


class AmazonAdapter:
    name: ClassVar[str] = "amazon"
    capabilities: ClassVar[Capabilities] = NOVA

    def __init__(self, config: Config) -> None:
        self._config = config

    def auth(self, key: str) -> Auth:  # pragma: no cover - chain_auth is used instead
        return self.chain_auth({"AWS_ACCESS_KEY_ID": key})

    def chain_auth(self, environ: Mapping[str, str]) -> Auth:
        resolve = _aws.credential_chain(environ, self._config.profile)
        return _aws.SigV4Signer(resolve, service="bedrock", region=self._config.region)

    def listed_models(self) -> list[str]:
        return ["amazon.nova-canvas-v1:0", "stability.sd3-5-large-v1:0"]

    def model_capabilities(self, model: str) -> Capabilities:
        return NOVA if _nova.is_nova(model) else STABILITY

    def needs(self, job: EditJob) -> Needs:
        nova = _nova.is_nova(job.model)
        return Needs(
            base64=True, edit_mask=_nova.mask_polarity(job) if nova else "white"
        )

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        images = [
            image_b64(job, prepared, i, provider="amazon")
            for i in range(len(job.images))
        ]
        mask = prepared.edit_mask_b64
        if _nova.is_nova(job.model):
            body = _nova.nova_body(job, images, mask)
        else:
            body = stability_body(job, images, mask)
        model = _inputs.model_path(job.model, provider=job.provider)
        headers = {
            **job.extra_headers,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        return UpstreamCall(
            "POST", f"/model/{model}/invoke", headers, msgspec.json.encode(body)
        )

    def parse(self, provider: str, reply: UpstreamResponse) -> Outputs:
        if not reply.ok:
            raise _replies.failure(provider, reply, error_message(reply.body))
        return Outputs([Encoded(b) for b in parse_images(provider, reply.body)])

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        return await compose(self, job, upstream)
