"""Vertex AI: Gemini image models via ``:generateContent``; retired Imagen via ``:predict``.

Gemini (``gemini-3.1-flash-image``, ``gemini-3-pro-image``, ...): the Gemini API's request
and reply (``_google``), on ``{base_url}/projects/{project}/locations/{location}/
publishers/google/models/{model}:generateContent``; Google serves them from the
``global`` location (https://aiplatform.googleapis.com), the default here. No mask, no
native ``n`` (the proxy makes n calls). API:
https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference
Imagen (every id shut down in 2026; kept for a regional ``location`` until the catalogue
refuses them): https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/imagen-api-edit
The first image is the RAW reference image, the mask (converted from OpenAI's alpha
convention to white = edit) the MASK reference with ``MASK_MODE_USER_PROVIDED``;
``n`` is ``sampleCount`` (1-4). ``editMode`` is inpaint-insertion with a mask, the
default without one; a client field ``edit_mode`` (``inpaint_removal``, ``outpaint``,
``bgswap`` ...) overrides it. Other unknown client fields go into ``parameters``;
one the proxy sets there (``sampleCount``, ``editMode`` ...) is a 400.
Credentials: a service-account key file (its path in ``api_key_env``, by default
``GOOGLE_APPLICATION_CREDENTIALS``) exchanged for OAuth tokens by the proxy, or with
``auth: access_token`` a ready token in ``api_key_env``. Deviations from OpenAI: edits
keep the input's size (``size`` must be auto); generation maps ``size`` to Imagen's
aspect ratios; ``output_format`` png/jpeg only. Images removed by Responsible-AI
filters leave a 400 ``moderation_blocked`` when nothing is left.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import quote

import msgspec

from proxy.errors import InvalidRequest, UpstreamRejected
from proxy.models import EditJob, EditResult
from proxy.providers import _google, _inputs, _replies
from proxy.providers._call import UpstreamCall, send
from proxy.providers._gcp_auth import ServiceAccountAuth
from proxy.providers._prepare import Needs, Prepared, image_b64, prepare
from proxy.providers._results import Encoded, Outputs, finish
from proxy.providers._sizes import IMAGEN_ASPECT_RATIOS, aspect_ratio, require_auto
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool, StaticKey
from proxy.upstream import Upstream, UpstreamResponse


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="vertex"):
    project: str
    # Gemini image models are served from `global`; a regional location takes its own
    # host (https://{location}-aiplatform.googleapis.com/v1), kept in step with it.
    location: str = "global"
    base_url: str = "https://aiplatform.googleapis.com/v1"
    api_key_env: str = "GOOGLE_APPLICATION_CREDENTIALS"
    auth: Literal["service_account", "access_token"] = "service_account"
    pool: Pool = Pool()


MAX_SAMPLES = 4
EDIT_MODES = {
    "default": "EDIT_MODE_DEFAULT",
    "inpaint_insertion": "EDIT_MODE_INPAINT_INSERTION",
    "inpaint_removal": "EDIT_MODE_INPAINT_REMOVAL",
    "outpaint": "EDIT_MODE_OUTPAINT",
    "bgswap": "EDIT_MODE_BGSWAP",
    "product_image": "EDIT_MODE_PRODUCT_IMAGE",
    "controlled_editing": "EDIT_MODE_CONTROLLED_EDITING",
    "style": "EDIT_MODE_STYLE",
}
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}


class _Prediction(msgspec.Struct, rename="camel"):
    bytes_base64_encoded: str | None = None
    mime_type: str = "image/png"
    rai_filtered_reason: str | None = None


class _Reply(msgspec.Struct):
    predictions: list[_Prediction] = []


_reply = msgspec.json.Decoder(_Reply)


def _edit_mode(job: EditJob, extra: dict[str, Any]) -> str:
    chosen = extra.pop("edit_mode", None)
    if chosen is None:
        return EDIT_MODES["inpaint_insertion" if job.mask is not None else "default"]
    if chosen not in EDIT_MODES:
        raise InvalidRequest(
            f"'edit_mode' must be one of {', '.join(EDIT_MODES)}", param="edit_mode"
        )
    return EDIT_MODES[chosen]


def parameters(job: EditJob, provider: str, extra: dict[str, Any]) -> dict[str, Any]:
    n = job.n or 1
    if n > MAX_SAMPLES:
        raise InvalidRequest(
            f"provider '{provider}' returns at most {MAX_SAMPLES} images per request",
            param="n",
        )
    params: dict[str, Any] = {"sampleCount": n}
    if job.output_format is not None:
        if job.output_format not in _MIME:
            raise InvalidRequest(
                f"provider '{provider}' writes png or jpeg only", param="output_format"
            )
        options: dict[str, Any] = {"mimeType": _MIME[job.output_format]}
        if job.output_compression is not None:
            options["compressionQuality"] = job.output_compression
        params["outputOptions"] = options
    if job.operation == "generate":
        ratio = aspect_ratio(job.size, IMAGEN_ASPECT_RATIOS, provider=provider)
        if ratio is not None:
            params["aspectRatio"] = ratio
    else:
        require_auto(job.size, provider=provider, why="edits keep the input's size")
        params["editMode"] = _edit_mode(job, extra)
    # storageUri would have the gateway's service account write the images into a
    # bucket of the client's choosing, and the reply would carry no bytes.
    return _inputs.merge_extra(params, extra, reserved=("storageUri",))


def build_body(job: EditJob, prepared: Prepared, provider: str) -> bytes:
    extra = dict(job.extra)
    params = parameters(job, provider, extra)
    instance: dict[str, Any] = {"prompt": job.prompt}
    if job.operation == "edit":
        refs: list[dict[str, Any]] = [
            {
                "referenceType": "REFERENCE_TYPE_RAW",
                "referenceId": 1,
                "referenceImage": {
                    "bytesBase64Encoded": image_b64(job, prepared, 0, provider=provider)
                },
            }
        ]
        mask = prepared.edit_mask_b64
        if mask is not None:
            refs.append(
                {
                    "referenceType": "REFERENCE_TYPE_MASK",
                    "referenceId": 2,
                    "referenceImage": {"bytesBase64Encoded": mask},
                    "maskImageConfig": {"maskMode": "MASK_MODE_USER_PROVIDED"},
                }
            )
        instance["referenceImages"] = refs
    return msgspec.json.encode({"instances": [instance], "parameters": params})


def parse_reply(provider: str, body: bytes) -> list[Encoded]:
    reply = _replies.decode(provider, body, _reply)
    images = [
        Encoded(p.bytes_base64_encoded, p.mime_type)
        for p in reply.predictions
        if p.bytes_base64_encoded
    ]
    if images:
        return images
    reasons = [
        p.rai_filtered_reason for p in reply.predictions if p.rai_filtered_reason
    ]
    raise UpstreamRejected(
        f"provider '{provider}' returned no image: "
        + ("; ".join(reasons) if reasons else "all results were filtered"),
        provider=provider,
        code="moderation_blocked",
    )


def is_gemini(model: str) -> bool:
    return model.startswith("gemini-")


class VertexAdapter:
    name: ClassVar[str] = "vertex"
    # Imagen's; Gemini models answer model_capabilities with _google's.
    capabilities: ClassVar[Capabilities] = Capabilities(
        max_images=1, image_types=frozenset({"image/png", "image/jpeg"})
    )

    def model_capabilities(self, model: str) -> Capabilities:
        return _google.GEMINI_CAPABILITIES if is_gemini(model) else self.capabilities

    def __init__(self, config: Config) -> None:
        self._config = config
        self._path = (
            f"/projects/{quote(config.project, safe='')}"
            f"/locations/{quote(config.location, safe='')}/publishers/google/models/"
        )
        self._service_account: ServiceAccountAuth | None = None

    def auth(self, key: str) -> Auth:
        if self._config.auth == "access_token":
            return StaticKey("Authorization", key, prefix="Bearer ")
        # Kept so edit() can refresh the token through the Upstream before each call.
        self._service_account = ServiceAccountAuth(
            key, key_env=self._config.api_key_env
        )
        return self._service_account

    def needs(self, job: EditJob) -> Needs:
        if is_gemini(job.model):
            return Needs(base64=True)
        edit = job.operation == "edit"
        return Needs(base64=edit, edit_mask="white" if edit else None)

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        # Checked before a token is fetched: the id must not climb out of models/.
        model = _inputs.model_path(job.model, provider=job.provider)
        headers = {**job.extra_headers, "Content-Type": "application/json"}
        if is_gemini(job.model):
            body = _google.build_body(job, prepared, job.provider)
            return UpstreamCall(
                "POST", f"{self._path}{model}:generateContent", headers, body
            )
        body = build_body(job, prepared, job.provider)
        return UpstreamCall("POST", f"{self._path}{model}:predict", headers, body)

    def parse(self, provider: str, reply: UpstreamResponse) -> Outputs:
        """An Imagen ``:predict`` reply."""
        if not reply.ok:
            raise _google.error_for(provider, reply)
        return Outputs(parse_reply(provider, reply.body))

    def parse_gemini(self, provider: str, reply: UpstreamResponse) -> Outputs:
        """A Gemini ``:generateContent`` reply."""
        if not reply.ok:
            raise _google.error_for(provider, reply)
        return Outputs(*_google.parse_reply(provider, reply.body))

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        call = self.build(job, await prepare(job, self.needs(job)))
        if self._service_account is not None:
            await self._service_account.refresh(upstream)
        parse = self.parse_gemini if is_gemini(job.model) else self.parse
        outputs = parse(upstream.name, await send(upstream, call))
        return await finish(outputs, job=job, upstream=upstream)
