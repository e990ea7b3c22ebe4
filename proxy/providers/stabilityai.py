"""Stability AI v2beta Stable Image: edit endpoints chosen by model name, and generation.

API: https://platform.stability.ai/docs/api-reference (``/v2beta/stable-image/...``).
``stabilityai/inpaint`` → ``/edit/inpaint``, likewise ``erase``, ``outpaint``,
``search-and-replace``, ``search-and-recolor``, ``remove-background``; generation:
``stabilityai/ultra``, ``stabilityai/core``, ``stabilityai/sd3.5-large`` (any
``sd3*`` model goes to ``/generate/sd3`` with ``model``). Multipart out, one image; the
mask (inpaint, erase) is converted to white = edit. Endpoint-specific fields
(``search_prompt``, ``select_prompt``, ``left``/``right``/``up``/``down``,
``negative_prompt``, ``seed``, ``grow_mask`` ...) pass through as form fields; one
the proxy sends itself is a 400, never a second part.
Deviations from OpenAI: no native ``n`` (the proxy makes n calls); edits keep the
input's size (``size`` must be auto); generation maps ``size`` to Stability's aspect
ratios. ``Accept: application/json`` is sent; a raw image reply is handled too.
``finish_reason: CONTENT_FILTERED`` and a 403 named ``content_moderation`` become a
400 ``moderation_blocked``.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar, NamedTuple

import msgspec

from proxy.errors import (
    InvalidRequest,
    UpstreamError,
    UpstreamRejected,
    from_upstream_status,
)
from proxy.formwriter import Form, safe_filename
from proxy.images import EXTENSIONS, require_stored
from proxy.models import EditJob, EditResult, StoredImage
from proxy.providers import _inputs, _replies
from proxy.providers._call import UpstreamCall, compose
from proxy.providers._openai_compat import _form_items
from proxy.providers._prepare import Needs, Prepared
from proxy.providers._results import Encoded, Output, Outputs
from proxy.providers._sizes import STABILITY_ASPECT_RATIOS, aspect_ratio, require_auto
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool, StaticKey
from proxy.upstream import Upstream, UpstreamResponse


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="stabilityai"):
    base_url: str = "https://api.stability.ai"
    api_key_env: str = "STABILITY_API_KEY"
    pool: Pool = Pool()


class Endpoint(NamedTuple):
    path: str
    prompt: bool  # the endpoint takes `prompt`
    mask: bool  # the endpoint takes `mask`


_EDIT = "/v2beta/stable-image/edit/"
_GEN = "/v2beta/stable-image/generate/"
# model name -> (path, takes prompt, takes mask)
EDITS = {
    name: Endpoint(_EDIT + name, prompt, mask)
    for name, prompt, mask in [
        ("inpaint", True, True), ("erase", False, True), ("outpaint", True, False),
        ("search-and-replace", True, False), ("search-and-recolor", True, False),
        ("remove-background", False, False),
    ]
}  # fmt: skip
GENERATE = {"ultra": _GEN + "ultra", "core": _GEN + "core"}
_SD3 = _GEN + "sd3"


def endpoint_for(job: EditJob, provider: str) -> Endpoint:
    if job.operation == "edit":
        found = EDITS.get(job.model)
        if found is None:
            raise InvalidRequest(
                f"provider '{provider}' has no edit endpoint '{job.model}'; use one of "
                + ", ".join(EDITS),
                param="model",
            )
        if job.mask is not None and not found.mask:
            raise InvalidRequest(
                f"'{job.model}' does not take a mask (inpaint and erase do)",
                param="mask",
            )
        return found
    if job.model in GENERATE:
        return Endpoint(GENERATE[job.model], True, False)
    if job.model.startswith("sd3"):
        return Endpoint(_SD3, True, False)
    raise InvalidRequest(
        f"provider '{provider}' generates with ultra, core or sd3* models; "
        f"'{job.model}' is not one",
        param="model",
    )


def form_fields(
    job: EditJob, endpoint: Endpoint, provider: str
) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    if endpoint.prompt:
        fields.append(("prompt", job.prompt))
    if endpoint.path == _SD3:
        fields.append(("model", job.model))
    if job.operation == "generate":
        ratio = aspect_ratio(job.size, STABILITY_ASPECT_RATIOS, provider=provider)
        if ratio is not None:
            fields.append(("aspect_ratio", ratio))
    else:
        require_auto(job.size, provider=provider, why="edits keep the input's size")
    if job.output_format is not None:
        fields.append(("output_format", job.output_format))
    # A second aspect_ratio, image or mask part would reach Stability beside ours.
    taken = {name for name, _ in fields} | {"image", "mask"}
    extra = _inputs.merge_extra({}, job.extra, reserved=taken)
    for name, value in extra.items():
        fields.extend(_form_items(name, value))
    return fields


def build_form(
    job: EditJob, prepared: Prepared, endpoint: Endpoint, provider: str
) -> Form:
    """The multipart body; an image on disk streams from its temp file when sent."""
    # Stability takes multipart only, also for generation where no file is sent.
    form = Form()
    for name, value in form_fields(job, endpoint, provider):
        form.add_field(name, value)
    if job.operation == "edit":
        image = require_stored(job.images[0], provider=provider, param="images[0]")
        mask = prepared.edit_mask
        if mask is not None:
            white = StoredImage(
                content_type="image/png", size=len(mask), filename="", data=mask
            )
            form.add_file("mask", white, "mask.png")
        filename = safe_filename(image.filename)
        form.add_file(
            "image", image, filename or f"image.{EXTENSIONS[image.content_type]}"
        )
    return form


class _Json(msgspec.Struct):
    image: str | None = None
    finish_reason: str | None = None


class _Error(msgspec.Struct):
    name: str | None = None
    errors: list[str] = []


def _filtered(provider: str) -> UpstreamRejected:
    return UpstreamRejected(
        f"provider '{provider}' filtered the result (CONTENT_FILTERED)",
        provider=provider,
        code="moderation_blocked",
    )


def parse_reply(provider: str, resp: UpstreamResponse) -> Output:
    """The image of a 2xx reply: JSON with base64, or the raw image bytes."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
    if ctype.startswith("image/") and resp.body:
        if resp.headers.get("finish-reason") == "CONTENT_FILTERED":
            raise _filtered(provider)
        return resp.body
    try:
        reply = msgspec.json.decode(resp.body, type=_Json)
    except msgspec.DecodeError:
        reply = _Json()
    if reply.finish_reason == "CONTENT_FILTERED":
        raise _filtered(provider)
    if not reply.image:
        raise _replies.unexpected(provider)
    return Encoded(reply.image)


def error_for(provider: str, resp: UpstreamResponse) -> UpstreamError:
    """Stability's ``{"id", "name", "errors": [...]}``; its moderation 403 is a 400."""
    err = _Error()
    with contextlib.suppress(msgspec.DecodeError):
        err = msgspec.json.decode(resp.body, type=_Error)
    message = "; ".join(err.errors) or err.name
    if resp.status == 403 and err.name == "content_moderation":
        return UpstreamRejected(
            message or f"provider '{provider}' flagged the request",
            provider=provider,
            code="moderation_blocked",
        )
    return from_upstream_status(
        provider,
        resp.status,
        message=message,
        retry_after=resp.headers.get("Retry-After"),
        code=err.name,
    )


class StabilityAdapter:
    name: ClassVar[str] = "stabilityai"
    capabilities: ClassVar[Capabilities] = Capabilities(max_images=1, native_n=False)

    def __init__(self, config: Config) -> None:
        self._config = config

    def auth(self, key: str) -> Auth:
        return StaticKey("Authorization", key, prefix="Bearer ")

    def needs(self, job: EditJob) -> Needs:
        # The endpoint is checked first: a mask it does not take is refused unread.
        endpoint_for(job, job.provider)
        return Needs(edit_mask="white" if job.operation == "edit" else None)

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        endpoint = endpoint_for(job, job.provider)
        headers = {**job.extra_headers, "Accept": "application/json"}
        form = build_form(job, prepared, endpoint, job.provider)
        return UpstreamCall("POST", endpoint.path, headers, form)

    def parse(self, provider: str, reply: UpstreamResponse) -> Outputs:
        if not reply.ok:
            raise error_for(provider, reply)
        return Outputs([parse_reply(provider, reply)])

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        return await compose(self, job, upstream)
