"""Turning a job's image references into what its provider can take, before it runs.

``file_id``s the embedded store holds become ``StoredImage``s for every provider; other
ids pass through only to providers with their own file ids. ``image_url``s are fetched
(SSRF-safely, into the request's temp files) unless the provider fetches URLs itself.
Adapters therefore see only ``StoredImage``s unless their capabilities say otherwise.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec

from proxy.errors import InvalidRequest, NotFound
from proxy.fetch import Fetcher
from proxy.images import PNG
from proxy.models import (
    Capabilities,
    EditJob,
    FileRef,
    ImageInput,
    RemoteImage,
    StoredImage,
)
from proxy.tempfiles import UploadSet
from proxy.upload_backend import FileStore


@dataclass(frozen=True, slots=True)
class _Request:
    caps: Capabilities
    provider: str
    files: FileStore
    fetcher: Fetcher
    uploads: UploadSet
    owner: str | None


async def resolve_inputs(
    job: EditJob,
    caps: Capabilities,
    *,
    provider: str,
    files: FileStore,
    fetcher: Fetcher,
    uploads: UploadSet,
    owner: str | None = None,
) -> EditJob:
    if job.source == "multipart" or (not job.images and job.mask is None):
        return job
    req = _Request(caps, provider, files, fetcher, uploads, owner)
    inputs = [(img, f"images[{i}]", False) for i, img in enumerate(job.images)]
    if job.mask is not None:
        inputs.append((job.mask, "mask", True))
    # Concurrently: several image URLs cost one fetch time, not the sum. Siblings are
    # not cancelled on a refusal (a fetch cancelled while opening its temp file would
    # leak the handle); every one ends, then the first failure in order is raised.
    results = await asyncio.gather(
        *(_resolve(req, img, param, mask=mask) for img, param, mask in inputs),
        return_exceptions=True,
    )
    resolved: list[ImageInput] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        resolved.append(result)
    mask = resolved.pop() if job.mask is not None else None
    return msgspec.structs.replace(job, images=tuple(resolved), mask=mask)


async def _resolve(
    req: _Request, image: ImageInput, param: str, *, mask: bool
) -> ImageInput:
    if isinstance(image, FileRef):
        return await _file(req, image, f"{param}.file_id", mask=mask)
    if isinstance(image, RemoteImage):
        url_param = f"{param}.image_url"
        if not req.caps.image_urls:
            return await req.fetcher.fetch(
                image.url, param=url_param, uploads=req.uploads, mask=mask
            )
        req.fetcher.check_scheme(image.url, param=url_param)
    return image


async def _file(req: _Request, ref: FileRef, param: str, *, mask: bool) -> ImageInput:
    record = await req.files.lookup(ref.file_id, owner=req.owner)
    if record is None:
        if req.caps.file_ids:
            return ref
        raise NotFound(
            f"'{param}' names no file this gateway holds ({ref.file_id!r}); upload it "
            f"with POST /v3/upload, and note that provider '{req.provider}' has no "
            "file ids of its own",
            param=param,
            code="file_not_found",
        )
    if mask and record.file_mimetype != PNG:
        raise InvalidRequest(
            f"'{param}' must be a PNG image (its alpha channel marks the edit area)",
            param=param,
            code="invalid_image",
        )
    if req.caps.image_urls and (url := await req.files.input_url(record)):
        return RemoteImage(url)  # the provider fetches it from the bucket
    try:
        path = await req.files.materialize(record, req.uploads)
    except FileNotFoundError:
        raise NotFound(
            f"'{param}' was deleted while the request started",
            param=param,
            code="file_not_found",
        ) from None
    return StoredImage(
        content_type=record.file_mimetype,
        size=record.file_size,
        filename=record.file_name,
        path=path,
    )
