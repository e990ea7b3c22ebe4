"""``/v3/upload``: upload, list, show and delete files of the embedded store.

Answers use Eden AI's shape (``file_id``, ``file_name``, ``file_size``,
``file_mimetype``, ``purpose``, ``created_at``, ``expires_at``). Only images are
accepted: the store exists to feed ``file_id`` into image edits. The store and its
sweeper live for the application's lifetime (``store_ctx``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import hdrs, web

from proxy import leftovers
from proxy.bodystream import request_body
from proxy.config_storage import UploadStoreConfig
from proxy.context import CONTEXT
from proxy.environment import MULTIPROC_ENV, s3_settings
from proxy.errors import InvalidRequest, NotFound, UnsupportedMediaType
from proxy.formreader import FormReader, boundary_of
from proxy.guard import defer_continue
from proxy.images import SNIFF_BYTES, sniff
from proxy.parsing import media_type
from proxy.providers._aws import credential_chain
from proxy.result_links import ResultLinks
from proxy.s3 import S3Client
from proxy.state import CLIENT_KEYS, CONFIG, METRICS, RESULT_LINKS, UPLOAD_STORE
from proxy.tasks import TaskGroup
from proxy.upload_backend import FileStore
from proxy.upload_objects import ObjectStore
from proxy.upload_store import Draft, StoredFile, UploadStore

_MAX_PURPOSE = 64
# Listing pages: OpenAI's list shape, with a page size a client may choose up to this.
LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v3/upload", upload, expect_handler=defer_continue)
    app.router.add_get("/v3/upload", list_files)
    app.router.add_get("/v3/upload/{file_id}", show_file)
    app.router.add_delete("/v3/upload/{file_id}", delete_file)


def store_ctx(
    environ: Mapping[str, str],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The upload store (``UPLOAD_STORE``) and its sweeper. The workers' directory
    (``PROMETHEUS_MULTIPROC_DIR``) is the one the supervisor shares with its worker
    processes (and removes when they are all gone)."""
    workers_dir = environ.get(MULTIPROC_ENV)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        if config.files.backend == "s3":
            async with object_store(config.files, environ, bool(app[CLIENT_KEYS])) as s:
                app[UPLOAD_STORE] = s
                app[RESULT_LINKS] = ResultLinks(
                    s.client, config.results, app[METRICS].results_stored
                )
                group = TaskGroup()
                group.spawn(s.run_sweeper(), name="upload-sweeper")
                try:
                    yield
                finally:
                    await group.close()
            return
        ephemeral = config.files.dir is None and workers_dir is None
        if config.files.dir is not None:
            directory = config.files.dir
        elif workers_dir is not None:
            # Workers must see each other's uploads: one directory for all of them.
            directory = os.path.join(workers_dir, "uploads")
        else:
            # Named for this process, so the next start removes it if this one is
            # killed before its clean-up runs.
            directory = await asyncio.to_thread(
                leftovers.make_dir, config.limits.temp_dir, "imagegate-store."
            )
        await asyncio.to_thread(os.makedirs, directory, mode=0o700, exist_ok=True)
        store = UploadStore(config.files, directory, keyed=bool(app[CLIENT_KEYS]))
        await store.load()
        app[UPLOAD_STORE] = store
        group = TaskGroup()
        group.spawn(store.run_sweeper(), name="upload-sweeper")
        try:
            yield
        finally:
            await group.close()
            if ephemeral:
                await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)

    return ctx


@asynccontextmanager
async def object_store(
    config: UploadStoreConfig, environ: Mapping[str, str], keyed: bool
) -> AsyncIterator[ObjectStore]:
    """The bucket-backed store, on its own connection pool."""
    assert config.s3 is not None
    resolve = credential_chain(environ, config.s3.profile)
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        client = S3Client(s3_settings(config.s3, environ), session, resolve)
        yield ObjectStore(config, client, keyed=keyed)


def caller(request: web.Request) -> str | None:
    """The client key's name when client keys are configured: files are then theirs
    (each key sees and uses only its own uploads); None: the anonymous owner, whose
    files no key reaches."""
    return request[CONTEXT].key if request.app[CLIENT_KEYS] else None


def _store(request: web.Request) -> FileStore:
    return request.app[UPLOAD_STORE]


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
    request.app[METRICS].upload_bytes.inc(record.file_size)
    return web.json_response(record.public())


async def _read_upload(request: web.Request, store: FileStore) -> StoredFile:
    limits = request.app[CONFIG].limits
    draft: Draft | None = None
    purpose: str | None = None
    try:
        timeout, cap = limits.client_idle_timeout_s, limits.body_cap
        async with request_body(request, timeout, cap) as body:
            reader = FormReader(body, boundary_of(request.headers[hdrs.CONTENT_TYPE]))
            while (part := await reader.next()) is not None:
                if part.nested:
                    raise InvalidRequest("nested multipart bodies are not supported")
                if part.name == "file" and draft is None:
                    owner = caller(request)
                    name = os.path.basename(part.filename or "")[:255]
                    draft = await _write(store, reader, name, owner)
                elif part.name == "purpose" and purpose is None:
                    purpose = await _read_purpose(reader)
                else:
                    raise InvalidRequest(
                        f"unexpected part {part.name!r}; send one 'file' and an "
                        "optional 'purpose'",
                        param=part.name,
                    )
        if draft is None:
            raise InvalidRequest("a 'file' part is required", param="file")
    except BaseException:
        # A part after the file was refused: the upload as a whole did not happen.
        if draft is not None:
            await store.discard(draft)
        raise
    # Published whole, purpose included: other workers index a record once.
    return await store.publish(draft, purpose)


async def _write(
    store: FileStore, reader: FormReader, name: str, owner: str | None
) -> Draft:
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

    return await store.write(chunks(), file_name=name, mimetype=kind, owner=owner)


async def _read_purpose(reader: FormReader) -> str:
    data = bytearray()
    while chunk := await reader.read():
        data += chunk
        if len(data) > _MAX_PURPOSE:
            break
    return _check_purpose(data.decode("utf-8", "replace"), len(data))


def _check_purpose(text: str, size: int) -> str:
    if not text or size > _MAX_PURPOSE or not text.isprintable():
        raise InvalidRequest(
            f"'purpose' must be 1 to {_MAX_PURPOSE} printable characters",
            param="purpose",
        )
    return text


def _limit(raw: str | None) -> int:
    if raw is None:
        return LIST_LIMIT
    if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIST_LIMIT:
        return int(raw)
    raise InvalidRequest(
        f"'limit' must be an integer from 1 to {MAX_LIST_LIMIT}", param="limit"
    )


async def list_files(request: web.Request) -> web.Response:
    """One page of the caller's files, oldest first, in OpenAI's list shape."""
    query = request.query
    purpose = query.get("purpose")
    if purpose is not None:
        _check_purpose(purpose, len(purpose.encode()))
    limit, after = _limit(query.get("limit")), query.get("after")
    if after is not None and len(after) > 64:
        raise InvalidRequest("'after' is not a file id", param="after")
    page = await _store(request).list(
        owner=caller(request), purpose=purpose, limit=limit, after=after
    )
    data = [f.public() for f in page.files]
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "has_more": page.has_more,
            "first_id": page.files[0].file_id if page.files else None,
            "last_id": page.files[-1].file_id if page.files else None,
        }
    )


async def show_file(request: web.Request) -> web.Response:
    file_id = request.match_info["file_id"]
    record = await _store(request).lookup(file_id, owner=caller(request))
    if record is None:
        raise _not_found(file_id)
    return web.json_response(record.public())


async def delete_file(request: web.Request) -> web.Response:
    file_id = request.match_info["file_id"]
    if not await _store(request).delete(file_id, owner=caller(request)):
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
    nullable_id = {"anyOf": [text, {"type": "null"}]}
    listing = {
        "type": "object",
        "required": ["object", "data", "has_more", "first_id", "last_id"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": file_schema},
            "has_more": {"type": "boolean"},
            "first_id": nullable_id,
            "last_id": nullable_id,
        },
    }
    page_size = {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT}
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
                "responses": answer(file_schema, 400, 408, 413, 415, 503, 507),
            },
            "get": {
                "summary": "List uploaded files",
                "parameters": [
                    {"name": name, "in": "query", "required": False, "schema": schema}
                    for name, schema in (
                        ("purpose", {**text, "minLength": 1, "maxLength": 64}),
                        ("limit", page_size),
                        ("after", text),
                    )
                ],
                "responses": answer(listing, 400),
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
