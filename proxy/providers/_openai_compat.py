"""Request building and reply parsing shared by OpenAI-shaped upstreams.

``build`` and ``parse`` are pure: multipart in → multipart out (the form streams each
image from memory or its temp file when sent), JSON in → JSON out (base64 prepared
beforehand); the reply is validated without decoding its base64 payloads.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import msgspec

from proxy.errors import UpstreamError, from_upstream_status
from proxy.formwriter import Form, joined, safe_filename
from proxy.images import EXTENSIONS, require_stored
from proxy.models import (
    FORWARDED_FIELDS,
    EditJob,
    EditResult,
    FileRef,
    ImageInput,
    RemoteImage,
    StoredImage,
    Usage,
    forwarded_values,
)
from proxy.providers import _inputs, _replies
from proxy.providers._call import UpstreamCall
from proxy.providers._prepare import BASE64, NO_NEEDS, Needs, Prepared
from proxy.providers._results import Outputs
from proxy.upstream import UpstreamResponse

# OpenAI's guide says at most 128 characters, the one mirror of its schema found 64.
MAX_SAFETY_IDENTIFIER = 64
# What json_body and multipart_form add after the scalar fields.
_IMAGE_FIELDS = ("image", "image[]", "images", "mask")


def job_fields(job: EditJob, *, model: str) -> dict[str, Any]:
    """The scalar fields of an OpenAI-shaped body, unknown client fields included.

    The client's fields may only add: the image and mask names the body or form gets
    later are refused too, so no second ``image`` part reaches the provider.
    """
    fields: dict[str, Any] = {"model": model, "prompt": job.prompt}
    for name, value in zip(FORWARDED_FIELDS, forwarded_values(job), strict=True):
        if value is not None:
            fields[name] = value
    if job.stream:
        fields["stream"] = True
    return _inputs.merge_extra(fields, job.extra, reserved=_IMAGE_FIELDS)


def with_safety_identifier(job: EditJob, *, derive: bool) -> EditJob:
    """The client's ``user`` as ``safety_identifier``, which supersedes it at OpenAI
    (one over 64 characters as its SHA-256); with ``derive``, a job without one gets
    its client key's hashed ``client_id``. A client's own ``safety_identifier`` is
    sent as it is."""
    if "safety_identifier" in job.extra:
        return job
    found = job.user
    if found is not None and len(found) > MAX_SAFETY_IDENTIFIER:
        found = hashlib.sha256(found.encode()).hexdigest()
    if found is None and derive:
        found = job.client_id
    if found is None:
        return job
    extra = {**job.extra, "safety_identifier": found}
    return msgspec.structs.replace(job, user=None, extra=extra)


def _form_items(name: str, value: Any) -> Iterator[tuple[str, str]]:
    # The OpenAI SDKs' encoding: bools as true/false, lists as key[], dicts as key[sub].
    if isinstance(value, bool):
        yield name, "true" if value else "false"
    elif isinstance(value, dict):
        for sub, item in value.items():
            yield from _form_items(f"{name}[{sub}]", item)
    elif isinstance(value, list):
        for item in value:
            yield from _form_items(f"{name}[]", item)
    elif value is not None:
        yield name, str(value)


def _filename(image: StoredImage, index: int, stem: str) -> str:
    # The client's own name, as it would have reached the provider directly.
    if name := safe_filename(image.filename):
        return name
    ext = EXTENSIONS[image.content_type]
    return f"{stem}{index if index else ''}.{ext}"


def multipart_form(job: EditJob, *, model: str) -> Form:
    """An OpenAI edit form; images on disk are streamed from their temp files.

    Each part carries the sniffed image type: OpenAI rejects application/octet-stream.
    """
    form = Form()
    for name, value in job_fields(job, model=model).items():
        for key, text in _form_items(name, value):
            form.add_field(key, text)
    stored = [
        require_stored(img, provider=job.provider, param=f"images[{i}]")
        for i, img in enumerate(job.images)
    ]
    # One image keeps its part's name (the Node SDK sends `image[]`, curl users
    # `image`); several go as OpenAI's `image[]`.
    field = "image[]"
    if len(stored) == 1 and stored[0].field != "image[]":
        field = "image"
    for i, img in enumerate(stored):
        form.add_file(field, img, _filename(img, i, "image"))
    if job.mask is not None:
        mask = require_stored(job.mask, provider=job.provider, param="mask")
        form.add_file("mask", mask, _filename(mask, 0, "mask"))
    return form


def data_url(image: StoredImage, data: str | None) -> str:
    """A held image as a data URL: the client's own, else one made from ``data``."""
    b64 = str(image.b64, "ascii") if image.b64 is not None else data
    assert b64 is not None, "prepare() was not asked for base64"
    return f"data:{image.content_type};base64,{b64}"


def image_ref(image: ImageInput, data: str | None) -> dict[str, str]:
    """An ``images[]`` entry of OpenAI's JSON edit form (``data``: prepared base64)."""
    if isinstance(image, RemoteImage):
        return {"image_url": image.url}
    if isinstance(image, FileRef):
        return {"file_id": image.file_id}
    return {"image_url": data_url(image, data)}


# Where a data URL goes: msgspec escapes NUL in every string, so only this is bare.
_SLOT = msgspec.Raw(b"\x00")


def json_body(job: EditJob, prepared: Prepared, *, model: str) -> bytes | Form:
    """OpenAI's JSON edit form, each held image's base64 joined in as bytes: copied
    once, not scanned for escapes (base64 has none; a client's was validated)."""
    body = job_fields(job, model=model)
    urls: list[bytes | memoryview] = []

    def ref(image: ImageInput, data: str | None) -> dict[str, Any]:
        if not isinstance(image, StoredImage):
            return image_ref(image, data)
        assert image.b64 is not None or data is not None, "base64 was not prepared"
        b64 = image.b64 if image.b64 is not None else str(data).encode("ascii")
        urls.extend((f'"data:{image.content_type};base64,'.encode(), b64, b'"'))
        return {"image_url": _SLOT}

    if job.operation == "edit":
        images = zip(job.images, prepared.images, strict=True)
        body["images"] = [ref(img, data) for img, data in images]
        if job.mask is not None:
            body["mask"] = ref(job.mask, prepared.mask)
    parts = msgspec.json.encode(body).split(b"\x00")
    pieces: list[bytes | memoryview] = [parts[0]]
    for i, rest in enumerate(parts[1:]):
        pieces += (*urls[3 * i : 3 * i + 3], rest)
    return joined(pieces, "application/json")


class _ImagesShape(msgspec.Struct):
    """Just enough of an images reply to validate it and price it."""

    data: list[msgspec.Raw]
    usage: Usage | None = None
    provider: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    cost: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_shape_decoder = msgspec.json.Decoder(_ImagesShape)
_object_decoder = msgspec.json.Decoder(dict[str, Any])


def parse_images(provider: str, body: bytes) -> EditResult:
    """Validate an OpenAI images reply; keep its bytes for splicing."""
    shape = _replies.decode(provider, body, _shape_decoder)
    if shape.provider is not msgspec.UNSET or shape.cost is not msgspec.UNSET:
        # An upstream gateway already added these; drop them so ours are not duplicates.
        obj = _object_decoder.decode(body)
        obj.pop("provider", None)
        obj.pop("cost", None)
        body = msgspec.json.encode(obj)
    return EditResult(body=body, images=len(shape.data), usage=shape.usage)


class _ErrorDetail(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorDetail | str | None = None


def error_for(provider: str, resp: UpstreamResponse) -> UpstreamError:
    """Map a non-2xx OpenAI-shaped reply, keeping the provider's message and code."""
    detail = _ErrorDetail()
    with contextlib.suppress(msgspec.DecodeError):
        err = msgspec.json.decode(resp.body, type=_ErrorEnvelope).error
        detail = _ErrorDetail(message=err) if isinstance(err, str) else err or detail
    return from_upstream_status(
        provider,
        resp.status,
        message=detail.message,
        retry_after=resp.headers.get("Retry-After"),
        error_type=detail.type,
        param=detail.param,
        code=None if detail.code is None else str(detail.code),
    )


def needs(job: EditJob) -> Needs:
    # A multipart form streams the files themselves; JSON carries base64.
    return NO_NEEDS if job.operation == "edit" and job.source == "multipart" else BASE64


def build(
    job: EditJob,
    prepared: Prepared,
    *,
    edits_path: str,
    generations_path: str,
    headers: dict[str, str],
) -> UpstreamCall:
    """One OpenAI-shaped call: multipart in → multipart out, JSON in → JSON out."""
    if job.operation == "edit" and job.source == "multipart":
        form = multipart_form(job, model=job.model)
        return UpstreamCall("POST", edits_path, headers, form)
    path = generations_path if job.operation == "generate" else edits_path
    json_headers = {**headers, "Content-Type": "application/json"}
    return UpstreamCall(
        "POST", path, json_headers, json_body(job, prepared, model=job.model)
    )


def parse(provider: str, reply: UpstreamResponse) -> Outputs:
    if not reply.ok:
        raise error_for(provider, reply)
    return Outputs(passthrough=parse_images(provider, reply.body))
