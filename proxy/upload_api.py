"""``/v3/upload``: upload, list, show and delete files of the embedded store.

Answers use Eden AI's shape (``file_id``, ``file_name``, ``file_size``,
``file_mimetype``, ``purpose``, ``created_at``, ``expires_at``). Only images are
accepted: the store exists to feed ``file_id`` into image edits. The store and its
sweeper live for the application's lifetime (``files_ctx``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import hdrs, web

from proxy.context import CURRENT
from proxy.errors import InvalidRequest, NotFound, UnsupportedMediaType
from proxy.filestore import FileStore, StoredFile
from proxy.formreader import FormReader, boundary_of, request_body
from proxy.guard import defer_continue
from proxy.images import SNIFF_BYTES, sniff
from proxy.parsing import media_type
from proxy.state import GATEWAY, Gateway
from proxy.tasks import TaskGroup
from proxy.workers import MULTIPROC_ENV

_MAX_PURPOSE = 64


def add_routes(app: web.Application, environ: Mapping[str, str]) -> None:
    app.router.add_post("/v3/upload", upload, expect_handler=defer_continue)
    app.router.add_get("/v3/upload", list_files)
    app.router.add_get("/v3/upload/{file_id}", show_file)
    app.router.add_delete("/v3/upload/{file_id}", delete_file)
    app.cleanup_ctx.append(_files_ctx(environ.get(MULTIPROC_ENV)))


def _files_ctx(
    workers_dir: str | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The store and its sweeper. ``workers_dir`` is the directory the supervisor
    shares with its worker processes (and removes when they are all gone)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        gateway = app[GATEWAY]
        config = gateway.config
        ephemeral = config.files.dir is None and workers_dir is None
        if config.files.dir is not None:
            directory = config.files.dir
        elif workers_dir is not None:
            # Workers must see each other's uploads: one directory for all of them.
            directory = os.path.join(workers_dir, "uploads")
        else:
            directory = await asyncio.to_thread(
                tempfile.mkdtemp, prefix="imagegate-store-", dir=config.limits.temp_dir
            )
        await asyncio.to_thread(os.makedirs, directory, mode=0o700, exist_ok=True)
        store = FileStore(config.files, directory)
        await store.load()
        gateway.store = store
        group = TaskGroup()
        group.spawn(store.run_sweeper(), name="upload-sweeper")
        try:
            yield
        finally:
            await group.close()
            if ephemeral:
                await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)

    return ctx


def caller(gateway: Gateway) -> str | None:
    """The client key's name when client keys are configured: files are then theirs
    (each key sees and uses only its own uploads); None, everyone's."""
    ctx = CURRENT.get()
    return ctx.key if gateway.keys and ctx is not None else None


def _store(request: web.Request) -> FileStore:
    store = request.app[GATEWAY].store
    assert store is not None
    return store


def _not_found(file_id: str) -> NotFound:
    return NotFound(
        f"no file with id '{file_id}' (it may have expired or been deleted)",
        param="file_id",
        code="file_not_found",
    )


async def upload(request: web.Request) -> web.Response:
    if media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType(
            "Content-Type must be multipart/form-data with a 'file' part",
            code="unsupported_media_type",
        )
    record = await _read_upload(request, _store(request))
    request.app[GATEWAY].metrics.upload_bytes.inc(record.file_size)
    return web.json_response(record.public())


async def _read_upload(request: web.Request, store: FileStore) -> StoredFile:
    limits = request.app[GATEWAY].config.limits
    record: StoredFile | None = None
    purpose: str | None = None
    try:
        timeout, cap = limits.client_idle_timeout_s, limits.body_cap
        async with request_body(request, timeout, cap) as body:
            reader = FormReader(body, boundary_of(request.headers[hdrs.CONTENT_TYPE]))
            while (part := await reader.next()) is not None:
                if part.nested:
                    raise InvalidRequest("nested multipart bodies are not supported")
                if part.name == "file" and record is None:
                    owner = caller(request.app[GATEWAY])
                    name = os.path.basename(part.filename or "")[:255]
                    record = await _save(store, reader, name, owner)
                elif part.name == "purpose" and purpose is None:
                    purpose = await _read_purpose(reader)
                else:
                    raise InvalidRequest(
                        f"unexpected part {part.name!r}; send one 'file' and an "
                        "optional 'purpose'",
                        param=part.name,
                    )
        if record is None:
            raise InvalidRequest("a 'file' part is required", param="file")
        if purpose is not None:
            record = await store.set_purpose(record, purpose)
    except BaseException:
        # A part after the file was refused: the upload as a whole did not happen.
        if record is not None:
            await asyncio.shield(store.delete(record.file_id))
        raise
    return record


async def _save(
    store: FileStore, reader: FormReader, name: str, owner: str | None
) -> StoredFile:
    head = b""
    while len(head) < SNIFF_BYTES and (chunk := await reader.read()):
        head += chunk
    kind = sniff(head[:SNIFF_BYTES])
    if kind is None:
        raise UnsupportedMediaType(
            "'file' is not a PNG, JPEG or WebP image",
            param="file",
            code="invalid_image",
        )

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        while chunk := await reader.read():
            yield bytes(chunk)

    return await store.save(
        chunks(), file_name=name, mimetype=kind, purpose=None, owner=owner
    )


async def _read_purpose(reader: FormReader) -> str:
    data = bytearray()
    while chunk := await reader.read():
        data += chunk
        if len(data) > _MAX_PURPOSE:
            break
    text = data.decode("utf-8", "replace")
    if not text or len(data) > _MAX_PURPOSE or not text.isprintable():
        raise InvalidRequest(
            f"'purpose' must be 1 to {_MAX_PURPOSE} printable characters",
            param="purpose",
        )
    return text


async def list_files(request: web.Request) -> web.Response:
    purpose = request.query.get("purpose")
    owner = caller(request.app[GATEWAY])
    files = await _store(request).list(owner=owner, purpose=purpose)
    return web.json_response({"data": [f.public() for f in files]})


async def show_file(request: web.Request) -> web.Response:
    file_id = request.match_info["file_id"]
    record = await _store(request).lookup(file_id, owner=caller(request.app[GATEWAY]))
    if record is None:
        raise _not_found(file_id)
    return web.json_response(record.public())


async def delete_file(request: web.Request) -> web.Response:
    file_id = request.match_info["file_id"]
    if not await _store(request).delete(file_id, owner=caller(request.app[GATEWAY])):
        raise _not_found(file_id)
    return web.json_response({"file_id": file_id, "deleted": True})


def upload_paths() -> dict[str, Any]:
    """The OpenAPI description of these routes (see ``proxy.openapi``)."""
    text = {"type": "string"}
    stamp = {"type": "string", "format": "date-time"}
    file_schema = {
        "type": "object",
        "required": ["file_id", "file_name", "file_size", "file_mimetype"],
        "properties": {
            "file_id": text,
            "file_name": text,
            "file_size": {"type": "integer"},
            "file_mimetype": text,
            "purpose": {"anyOf": [text, {"type": "null"}]},
            "metadata": {"type": "object"},
            "created_at": stamp,
            "expires_at": stamp,
        },
    }
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}

    def answer(schema: dict[str, Any], *errors: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": schema}},
            }
        }
        out.update({str(s): {"description": "error", "content": error} for s in errors})
        return out

    form = {
        "type": "object",
        "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"}, "purpose": text},
    }
    listing = {
        "type": "object",
        "properties": {"data": {"type": "array", "items": file_schema}},
    }
    file_id = [{"name": "file_id", "in": "path", "required": True, "schema": text}]
    deleted = {
        "type": "object",
        "properties": {"file_id": text, "deleted": {"type": "boolean"}},
    }
    return {
        "/v3/upload": {
            "post": {
                "summary": "Upload an image for file_id",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": form}},
                },
                "responses": answer(file_schema, 400, 408, 413, 415, 507),
            },
            "get": {
                "summary": "List uploaded files",
                "parameters": [
                    {
                        "name": "purpose",
                        "in": "query",
                        "required": False,
                        "schema": text,
                    }
                ],
                "responses": answer(listing),
            },
        },
        "/v3/upload/{file_id}": {
            "get": {
                "summary": "Show an uploaded file",
                "parameters": file_id,
                "responses": answer(file_schema, 404),
            },
            "delete": {
                "summary": "Delete an uploaded file",
                "parameters": file_id,
                "responses": answer(deleted, 404),
            },
        },
    }
