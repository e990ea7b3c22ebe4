"""Black Forest Labs FLUX: FLUX.2 and Kontext (edit by prompt), Fill (mask) and Expand.

API: https://docs.bfl.ai (``POST /v1/{model}``, then ``GET polling_url``)
Submit answers ``{id, polling_url}``; the proxy polls that URL (only on the allowed
hosts, ``*.bfl.ai`` by default, since the key goes with it) every
``poll_interval_s`` until ``Ready``, up to ``deadline_s`` (then 504). ``Error`` and
``Failed`` are a 502, ``Content Moderated``/``Request Moderated`` a 400. The result's
``sample`` is a signed URL that expires within minutes, so with ``b64_json`` (the
default) the proxy downloads it at once, without the key (``proxy.downloads``).
Deviations: one image per job (the handler fans ``n`` out); Kontext takes up to 4 images
(``input_image``, ``input_image_2``...) and no mask; Fill takes one image and the mask,
converted to FLUX's white = edit; ``size`` maps to ``aspect_ratio`` (Kontext) and must
be auto for Fill and Expand. FLUX.2 (``flux-2-pro``, ``-max``, ``-flex``, ``-klein-4b``,
``-klein-9b``; billed per megapixel) is sized by ``width``/``height``, made from a
``WIDTHxHEIGHT`` size, and takes reference images as Kontext does: up to 8, klein up
to 4 (docs.bfl.ai editing overview). Unknown client fields (``seed``, ``safety_tolerance``,
``steps``...) are forwarded.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, TypeVar

import msgspec

from proxy.errors import InvalidRequest, UpstreamRejected, UpstreamUnavailable
from proxy.models import EditJob, EditResult
from proxy.providers import _inputs, _polling, _replies, _sizes
from proxy.providers._call import UpstreamCall, send
from proxy.providers._prepare import Needs, Prepared, image_b64, prepare, splice
from proxy.providers._results import Outputs, finish
from proxy.providers.base import (
    Auth,
    Capabilities,
    ConfigBase,
    Pool,
    Seconds,
    StaticKey,
)
from proxy.upstream import Upstream, UpstreamResponse

T = TypeVar("T")
ASPECT_RATIOS = (
    "21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21",
)  # fmt: skip
_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
KONTEXT = Capabilities(max_images=4, mask=False, native_n=False, image_types=_TYPES)
FILL = Capabilities(generate=False, max_images=1, native_n=False, image_types=_TYPES)
EXPAND = Capabilities(generate=False, max_images=1, mask=False, native_n=False)
GENERATE = Capabilities(edit=False, max_images=0, mask=False, native_n=False)
FLUX2 = Capabilities(max_images=8, mask=False, native_n=False, image_types=_TYPES)
FLUX2_KLEIN = Capabilities(max_images=4, mask=False, native_n=False, image_types=_TYPES)
_MODERATED = frozenset({"Content Moderated", "Request Moderated"})
_FINAL = frozenset({"Ready", "Error", "Failed", "Task not found"}) | _MODERATED


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="bfl"):
    base_url: str = "https://api.bfl.ai/v1"
    api_key_env: str = "BFL_API_KEY"
    poll_interval_s: Seconds = 0.5
    deadline_s: Seconds = 300.0
    # scheme://host patterns that polling and result URLs must match.
    allowed_hosts: list[str] = msgspec.field(
        default_factory=lambda: ["https://*.bfl.ai", "https://bfl.ai"]
    )
    pool: Pool = Pool()


def model_capabilities(model: str) -> Capabilities:
    if model.startswith("flux-2-"):
        return FLUX2_KLEIN if "klein" in model else FLUX2
    if "fill" in model:
        return FILL
    if "expand" in model:
        return EXPAND
    if "kontext" in model:
        return KONTEXT
    return GENERATE


class Submitted(msgspec.Struct):
    id: str
    polling_url: str


class Result(msgspec.Struct):
    sample: str | None = None


class Job(msgspec.Struct):
    status: str
    result: Result | None = None


class _Error(msgspec.Struct):
    detail: str | list[dict[str, Any]] | None = None


def error_message(body: bytes) -> str | None:
    """BFL's ``detail``: a string, or FastAPI's list of ``{loc, msg}``."""
    try:
        detail = msgspec.json.decode(body, type=_Error).detail
    except msgspec.DecodeError:
        return None
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) for d in detail) or None
    return detail


def _dimensions(size: str | None) -> dict[str, int]:
    """FLUX.2's ``width``/``height`` from a ``WIDTHxHEIGHT`` size (auto: BFL's)."""
    parsed = _sizes.parse_size(size)
    if parsed is None:
        return {}
    if parsed.width is None or parsed.height is None:
        raise InvalidRequest(
            f"FLUX.2 is sized in pixels: use WIDTHxHEIGHT, not {size!r}", param="size"
        )
    return {"width": parsed.width, "height": parsed.height}


def build_body(job: EditJob, prepared: Prepared) -> dict[str, Any]:
    body: dict[str, Any] = {**job.extra, "prompt": job.prompt}
    images = [
        image_b64(job, prepared, i, provider="bfl") for i in range(len(job.images))
    ]
    caps = model_capabilities(job.model)
    if caps is FILL or caps is EXPAND:
        _sizes.require_auto(job.size, provider="bfl", why="FLUX keeps the image size")
        body["image"] = images[0]
        if prepared.edit_mask_b64 is not None:
            body["mask"] = prepared.edit_mask_b64
    else:
        for i, image in enumerate(images):
            body["input_image" if i == 0 else f"input_image_{i + 1}"] = image
        if caps is FLUX2 or caps is FLUX2_KLEIN:
            body.update(_dimensions(job.size))
        else:
            ratio = _sizes.aspect_ratio(job.size, ASPECT_RATIOS, provider="bfl")
            if ratio is not None:
                body["aspect_ratio"] = ratio
    if job.output_format in ("png", "jpeg"):
        body["output_format"] = job.output_format
    return body


def _decode(provider: str, reply: UpstreamResponse, typ: type[T]) -> T:
    if not reply.ok:
        raise _replies.failure(provider, reply, error_message(reply.body))
    return _replies.decode(provider, reply.body, typ)


def outputs_of(state: Job, hosts: list[str], *, provider: str) -> Outputs:
    """The finished job's image URL (on the allowed hosts), or the job's failure."""
    if state.status in _MODERATED:
        raise UpstreamRejected(
            f"provider '{provider}' refused the request: {state.status}",
            provider=provider,
            code="moderation_blocked",
        )
    sample = state.result.sample if state.result else None
    if state.status != "Ready" or not sample:
        raise UpstreamUnavailable(
            f"provider '{provider}' failed the job ({state.status})",
            provider=provider,
            code="upstream_job_failed",
        )
    return Outputs([_polling.require_allowed(sample, hosts, provider=provider)])


class BFLAdapter:
    name: ClassVar[str] = "bfl"
    capabilities: ClassVar[Capabilities] = KONTEXT

    def __init__(self, config: Config) -> None:
        self._config = config

    def auth(self, key: str) -> Auth:
        return StaticKey("x-key", key)

    def key_hosts(self) -> list[str]:
        # polling_url may be on another BFL host than base_url (e.g. api.us1.bfl.ai).
        return list(self._config.allowed_hosts)

    def listed_models(self) -> list[str]:
        return [
            "flux-2-pro", "flux-2-max", "flux-2-flex", "flux-2-klein-4b",
            "flux-2-klein-9b", "flux-kontext-pro", "flux-kontext-max",
            "flux-pro-1.0-fill", "flux-pro-1.0-expand", "flux-pro-1.1",
        ]  # fmt: skip

    def model_capabilities(self, model: str) -> Capabilities:
        return model_capabilities(model)

    def needs(self, job: EditJob) -> Needs:
        caps = model_capabilities(job.model)
        fill = caps is FILL or caps is EXPAND
        return Needs(base64=True, edit_mask="white" if fill else None)

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        path = f"/{_inputs.model_path(job.model, provider=job.provider)}"
        headers = {**job.extra_headers, "Content-Type": "application/json"}
        body = msgspec.json.encode(build_body(job, prepared))
        return UpstreamCall("POST", path, headers, body)

    def submitted(self, provider: str, reply: UpstreamResponse) -> str:
        """The polling URL of an accepted job (on the allowed hosts)."""
        url = _decode(provider, reply, Submitted).polling_url
        return _polling.require_allowed(
            url, self._config.allowed_hosts, provider=provider
        )

    def parse(self, provider: str, reply: UpstreamResponse) -> Job:
        """One poll reply: the job's state."""
        return _decode(provider, reply, Job)

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        cfg = self._config
        name = upstream.name
        deadline = asyncio.get_running_loop().time() + cfg.deadline_s
        prepared = await prepare(job, self.needs(job), splice=True)
        call = splice(self.build(job, prepared), prepared)
        poll_url = self.submitted(name, await send(upstream, call))

        async def fetch() -> Job:
            return self.parse(name, await upstream.get(poll_url))

        state = await _polling.poll(
            fetch,
            lambda j: j.status in _FINAL,
            interval_s=cfg.poll_interval_s,
            deadline=deadline,
            provider=name,
        )
        outputs = outputs_of(state, cfg.allowed_hosts, provider=name)
        return await finish(
            outputs, job=job, upstream=upstream, hosts=cfg.allowed_hosts
        )
