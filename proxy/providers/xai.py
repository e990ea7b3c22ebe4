"""xAI (Grok Imagine) image edits and generations.

API: https://docs.x.ai/developers/model-capabilities/images
Edits are JSON only: one source image as ``image: {url, type: "image_url"}``, two or
three as ``images: [...]`` (the two are mutually exclusive; providers.md conflict #8:
we follow the documented ``images`` array, not an array under ``image``). Each url is
an https URL or a data URI. The reply is OpenAI's images shape.
Deviations from OpenAI: at most 3 source images, no mask; ``response_format`` defaults
to ``url`` at xAI, so the proxy asks for ``b64_json`` unless the client chose; ``size``
is not supported upstream and maps to ``aspect_ratio`` (a size with no exact xAI ratio
is a 400 naming the supported ones); OpenAI-only fields (quality, background,
output_format, output_compression, input_fidelity, moderation, partial_images) are not
sent; unknown client fields (``aspect_ratio``, ``resolution``) are forwarded.
``grok-imagine-image-2.0`` takes ``quality`` (low or medium; ``auto`` is left out) and
``resolution`` (1k, 1.5k or 2k), both checked here so a wrong one is a 400 naming it;
``grok-imagine-image`` takes neither. ``grok-imagine-image-quality`` is shut down.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, ClassVar

import msgspec

from proxy.errors import InvalidRequest
from proxy.models import EditJob, EditResult, ImageInput, RemoteImage, StoredImage
from proxy.providers import _openai_compat as compat
from proxy.providers._call import UpstreamCall, compose, open_reply
from proxy.providers._prepare import Needs, Prepared
from proxy.providers._results import Outputs
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool, StaticKey
from proxy.upstream import Upstream, UpstreamResponse
from proxy.upstream_reply import UpstreamStream

MAX_IMAGES = 3
# xAI's aspect ratios that an OpenAI "WxH" size can name exactly.
ASPECT_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9", "2:3", "3:2", "1:2", "2:1")
# grok-imagine-image-2.0's tiers ("high" is refused upstream).
QUALITIES = ("low", "medium")
RESOLUTIONS = ("1k", "1.5k", "2k")


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="xai"):
    base_url: str = "https://api.x.ai/v1"
    api_key_env: str = "XAI_API_KEY"
    pool: Pool = Pool()


def aspect_ratio(size: str) -> str:
    """The xAI aspect ratio exactly equal to an OpenAI ``WxH`` size."""
    width, _, height = size.partition("x")
    if width.isdigit() and height.isdigit() and int(width) and int(height):
        w, h = int(width), int(height)
        for ratio in ASPECT_RATIOS:
            a, b = (int(v) for v in ratio.split(":"))
            if w * b == h * a:
                return ratio
    raise InvalidRequest(
        f"size '{size}' has no xAI aspect ratio; use auto or a size with ratio "
        f"{', '.join(ASPECT_RATIOS)} (or send aspect_ratio)",
        param="size",
    )


def image_object(image: ImageInput, data: str | None, param: str) -> dict[str, str]:
    if isinstance(image, RemoteImage):
        url = image.url
    elif isinstance(image, StoredImage):
        url = compat.data_url(image, data)
    else:
        raise InvalidRequest(
            f"'{param}' is a file id, which xAI cannot resolve; send the image itself",
            param=param,
        )
    return {"url": url, "type": "image_url"}


def _tiered(job: EditJob, body: dict[str, Any]) -> None:
    """grok-imagine-image-2.0's ``quality`` and ``resolution``, checked."""
    if job.quality not in (None, "auto"):
        if job.quality not in QUALITIES:
            raise InvalidRequest(
                f"model '{job.model}' takes quality {' or '.join(QUALITIES)}",
                param="quality",
            )
        body["quality"] = job.quality
    resolution = body.get("resolution")
    if resolution is not None and resolution not in RESOLUTIONS:
        raise InvalidRequest(
            f"'resolution' must be one of {', '.join(RESOLUTIONS)}",
            param="resolution",
        )


def build_body(job: EditJob, prepared: Prepared) -> bytes:
    body: dict[str, Any] = {**job.extra, "model": job.model, "prompt": job.prompt}
    if job.model.startswith("grok-imagine-image-2"):
        _tiered(job, body)
    body["response_format"] = job.response_format or "b64_json"
    if job.n is not None:
        body["n"] = job.n
    if job.user is not None:
        body["user"] = job.user
    if job.size not in (None, "auto") and "aspect_ratio" not in job.extra:
        assert job.size is not None
        body["aspect_ratio"] = aspect_ratio(job.size)
    refs = [
        image_object(img, prepared.images[i], f"images[{i}]")
        for i, img in enumerate(job.images)
    ]
    if len(refs) == 1:
        body["image"] = refs[0]
    elif refs:
        body["images"] = refs
    return msgspec.json.encode(body)


class XAIAdapter:
    name: ClassVar[str] = "xai"
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_images=MAX_IMAGES, mask=False, image_urls=True
    )

    def __init__(self, config: Config) -> None:
        self._config = config

    def auth(self, key: str) -> Auth:
        return StaticKey("Authorization", key, prefix="Bearer ")

    def needs(self, job: EditJob) -> Needs:
        return Needs(base64=True)

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        path = "/images/generations" if job.operation == "generate" else "/images/edits"
        headers = {**job.extra_headers, "Content-Type": "application/json"}
        return UpstreamCall("POST", path, headers, build_body(job, prepared))

    openai_images = True  # a large reply is parsed in slices (_call._parse)

    def parse(self, provider: str, reply: UpstreamResponse) -> Outputs:
        return compat.parse(provider, reply)

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        return await compose(self, job, upstream)

    def open(
        self, job: EditJob, upstream: Upstream, *, held: int
    ) -> Coroutine[Any, Any, EditResult | UpstreamStream]:
        return open_reply(self, job, upstream, held=held)  # awaited by the caller
