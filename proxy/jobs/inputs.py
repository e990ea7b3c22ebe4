"""A job's image inputs, kept where any replica can read them until it runs.

Bytes the client sent (multipart parts, data URLs) go to the upload store
(``files:``; with ``backend: s3`` a bucket every replica shares) as files of the
job's owner with purpose ``job_input``, before the 202; they count against the
owner's share of the store and are deleted when the job ends (else the store's
retention sweeps them). A ``file_id`` or an image URL stays a reference, resolved when
the job runs as the synchronous call would resolve it.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator

import aiofiles

from proxy.errors import NotFound
from proxy.jobs.records import Input, JobRecord, reference
from proxy.models import EditJob, FileRef, ImageInput, RemoteImage, StoredImage
from proxy.tempfiles import UploadSet
from proxy.upload_backend import FileStore

PURPOSE = "job_input"
_CHUNK = 1024 * 1024


async def _chunks(image: StoredImage) -> AsyncIterator[bytes]:
    if image.path is None:
        yield await image.read()
        return
    async with aiofiles.open(image.path, "rb") as f:
        while chunk := await f.read(_CHUNK):
            yield chunk


async def stash(
    store: FileStore, job: EditJob, owner: str | None
) -> tuple[list[Input], Input | None]:
    """The job's inputs as references, its bytes stored first; on failure, what was
    stored is deleted again."""
    stored: list[str] = []

    async def one(image: ImageInput) -> Input:
        if not isinstance(image, StoredImage):
            return reference(image)
        draft = await store.write(
            _chunks(image),
            file_name=image.filename or "input",
            mimetype=image.content_type,
            owner=owner,
        )
        record = await store.publish(draft, PURPOSE)
        stored.append(record.file_id)
        return reference(image, record.file_id)

    try:
        images = [await one(image) for image in job.images]
        mask = None if job.mask is None else await one(job.mask)
    except BaseException:
        await discard(store, stored, owner)
        raise
    return images, mask


def stored_ids(record: JobRecord) -> list[str]:
    inputs = [*record.images, *([record.mask] if record.mask else [])]
    return [i.file_id for i in inputs if i.kind == "stored" and i.file_id]


async def discard(store: FileStore, file_ids: list[str], owner: str | None) -> None:
    for file_id in file_ids:
        with contextlib.suppress(Exception):  # the sweeper removes what is left
            await store.delete(file_id, owner=owner)


async def restore(
    store: FileStore, record: JobRecord, uploads: UploadSet
) -> tuple[tuple[ImageInput, ...], ImageInput | None]:
    """The job's inputs as the synchronous call had them: stored bytes back in the
    run's temp files (or memory, for a data URL), references as they were."""

    async def one(entry: Input, param: str) -> ImageInput:
        if entry.kind == "remote":
            assert entry.url is not None
            return RemoteImage(entry.url)
        assert entry.file_id is not None
        if entry.kind == "file":
            return FileRef(entry.file_id)
        found = await store.lookup(entry.file_id, owner=record.key)
        path = None
        if found is not None:
            with contextlib.suppress(FileNotFoundError):
                path = await store.materialize(found, uploads)
        if path is None:
            raise NotFound(
                f"the job's input '{param}' is no longer stored (its file was "
                "deleted or expired before the job ran)",
                param=param,
                code="file_not_found",
            )
        image = StoredImage(
            content_type=entry.content_type,
            size=entry.size,
            filename=entry.filename,
            path=path,
            field=entry.field,
        )
        if not entry.data_url:
            return image
        data = await image.read()
        return StoredImage(
            content_type=entry.content_type,
            size=entry.size,
            filename=entry.filename,
            data=data,
            b64=base64.b64encode(data),
            field=entry.field,
        )

    images = tuple(
        [await one(entry, f"images[{i}]") for i, entry in enumerate(record.images)]
    )
    mask = None if record.mask is None else await one(record.mask, "mask")
    return images, mask
