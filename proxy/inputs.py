"""Turning a job's image references into what its provider can take, before it runs.

``file_id``s the embedded store holds become ``StoredImage``s for every provider; other
ids pass through only to providers with their own file ids. ``image_url``s are fetched
(SSRF-safely, into the request's temp files) unless the provider fetches URLs itself.
Adapters therefore see only ``StoredImage``s unless their capabilities say otherwise.
"""

from __future__ import annotations

import msgspec

from proxy.errors import InvalidRequest, NotFound
from proxy.fetch import Fetcher
from proxy.filestore import FileStore
from proxy.images import PNG
from proxy.models import EditJob, FileRef, ImageInput, RemoteImage, StoredImage
from proxy.providers.base import Capabilities
from proxy.uploads import UploadSet


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

    async def resolve(image: ImageInput, param: str, mask: bool) -> ImageInput:
        if isinstance(image, FileRef):
            record = files.get(image.file_id, owner=owner)
            if record is None:
                if caps.file_ids:
                    return image
                raise NotFound(
                    f"'{param}.file_id' names no file this gateway holds "
                    f"({image.file_id!r}); upload it with POST /v3/upload, and note "
                    f"that provider '{provider}' has no file ids of its own",
                    param=f"{param}.file_id",
                    code="file_not_found",
                )
            if mask and record.file_mimetype != PNG:
                raise InvalidRequest(
                    f"'{param}.file_id' must be a PNG image (its alpha channel marks "
                    "the edit area)",
                    param=f"{param}.file_id",
                    code="invalid_image",
                )
            try:
                path = await uploads.link(files.path(record))
            except FileNotFoundError:
                raise NotFound(
                    f"'{param}.file_id' was deleted while the request started",
                    param=f"{param}.file_id",
                    code="file_not_found",
                ) from None
            return StoredImage(
                content_type=record.file_mimetype,
                size=record.file_size,
                filename=record.file_name,
                path=path,
            )
        if isinstance(image, RemoteImage):
            url_param = f"{param}.image_url"
            if not caps.image_urls:
                return await fetcher.fetch(
                    image.url, param=url_param, uploads=uploads, mask=mask
                )
            fetcher.check_scheme(image.url, param=url_param)
        return image

    images = [
        await resolve(img, f"images[{i}]", False) for i, img in enumerate(job.images)
    ]
    mask = None if job.mask is None else await resolve(job.mask, "mask", True)
    return msgspec.structs.replace(job, images=tuple(images), mask=mask)
