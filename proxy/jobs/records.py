"""A job's record, and the job as ``GET /v3/images/jobs/{id}`` (and a webhook) shows
it; pure.

The record holds what running the job takes: the model as the client named it, the
validated job's fields, its inputs as references (stored files, URLs, file ids), the
owner and the state. The result is kept beside the record (it can be megabytes) and
put in the view unchanged, so a job's ``result`` is byte for byte the synchronous
answer.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

import msgspec

from proxy.accounting import splice_parts
from proxy.models import (
    EditJob,
    FileRef,
    ImageInput,
    RemoteImage,
    StoredImage,
)

State = Literal["queued", "in_progress", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
# Jobs of requests without a client key.
ANONYMOUS = "anonymous"


class Input(msgspec.Struct, frozen=True, omit_defaults=True):
    """One image input of a job. ``stored``: bytes the client sent, kept in the upload
    store under ``file_id`` until the job ends; ``file``: the client's own file id;
    ``remote``: a URL, fetched (or passed on) when the job runs."""

    kind: Literal["stored", "file", "remote"]
    file_id: str | None = None
    url: str | None = None
    content_type: str = ""
    size: int = 0
    filename: str = ""
    field: str = ""
    data_url: bool = False  # it came as a data: URL (JSON upstreams get one back)


class JobRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    key: str | None  # the client key's name; None without client keys
    created_at: int
    model: str  # as the client named it (an alias stays an alias)
    fields: dict[str, Any]  # the validated job's fields, its images and mask apart
    images: list[Input] = []
    mask: Input | None = None
    links: bool = False  # result images become links (proxy.result_links)
    webhook_url: str | None = None
    # none: no webhook; pending: to send once the job ends; delivered / failed.
    webhook: Literal["none", "pending", "delivered", "failed"] = "none"
    state: State = "queued"
    attempts: int = 0
    started_at: int | None = None
    completed_at: int | None = None
    status_code: int | None = None  # the answer's status, once it ended
    error: dict[str, Any] | None = None  # the error envelope's ``error`` object
    provider: str | None = None
    cost: float | None = None

    @property
    def owner(self) -> str:
        return self.key or ANONYMOUS


class _View(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    object: str = "image.job"
    status: str
    created_at: int
    model: str
    started_at: int | None = None
    completed_at: int | None = None
    attempts: int = 0
    status_code: int | None = None
    provider: str | None = None
    cost: float | None = None
    error: dict[str, Any] | None = None


def new_id() -> str:
    return "imgjob_" + secrets.token_hex(16)


def view(record: JobRecord, result: bytes | None = None) -> bytes:
    """The job as GET shows it; ``result`` (the synchronous answer's bytes) is put in
    unchanged as the ``result`` member."""
    return b"".join(view_parts(record, result))


def view_parts(
    record: JobRecord, result: bytes | None = None
) -> tuple[bytes | memoryview, ...]:
    """``view`` as pieces, the result not copied: a large one is joined off the loop
    or written in pieces (``proxy.held``)."""
    body = msgspec.json.encode(
        _View(
            id=record.id,
            status=record.state,
            created_at=record.created_at,
            model=record.model,
            started_at=record.started_at,
            completed_at=record.completed_at,
            attempts=record.attempts,
            status_code=record.status_code,
            provider=record.provider,
            cost=record.cost,
            error=record.error,
        )
    )
    if result is None:
        return (body,)
    head, tail = splice_parts(body, b'"result":')
    return head, tail[:-1], result, tail[-1:]


def accepted(record: JobRecord) -> bytes:
    """The 202's body: ``{id, object, status, created_at}``."""
    return msgspec.json.encode(
        {
            "id": record.id,
            "object": "image.job",
            "status": record.state,
            "created_at": record.created_at,
        }
    )


def job_fields(job: EditJob) -> dict[str, Any]:
    fields = msgspec.structs.asdict(job)
    del fields["images"], fields["mask"]
    return fields


def rebuild(
    record: JobRecord, images: tuple[ImageInput, ...], mask: ImageInput | None
) -> EditJob:
    return EditJob(**record.fields, images=images, mask=mask)


def reference(image: ImageInput, file_id: str | None = None) -> Input:
    """The record's entry for one input (``file_id``: where a StoredImage was put)."""
    if isinstance(image, RemoteImage):
        return Input("remote", url=image.url)
    if isinstance(image, FileRef):
        return Input("file", file_id=image.file_id)
    assert isinstance(image, StoredImage)
    assert file_id is not None
    return Input(
        "stored",
        file_id=file_id,
        content_type=image.content_type,
        size=image.size,
        filename=image.filename,
        field=image.field,
        data_url=image.b64 is not None,
    )


encode = msgspec.json.encode
decode = msgspec.json.Decoder(JobRecord).decode
