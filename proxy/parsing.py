"""Request intake: Content-Type dispatch, size and count caps, validation.

JSON bodies are read with a cap (``proxy.json_body``) and converted by msgspec; multipart file parts stream
chunk by chunk into temp files owned by the request's ``UploadSet`` (never a whole part
in memory), and text fields are converted to the same typed request.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import hdrs, web

from proxy.bodystream import request_body, too_large
from proxy.charsets import text_codec
from proxy.config import Limits
from proxy.errors import (
    InvalidRequest,
    UnsupportedMediaType,
)
from proxy.formreader import Chunks as Chunks  # proxy.quote reads it here
from proxy.formreader import FormReader, Part, Watch, boundary_of
from proxy.images import SNIFF_BYTES, require_image
from proxy.json_body import read_json as read_json  # handlers read it here
from proxy.models import (
    FORM_FIELDS,
    EditForm,
    StoredImage,
)
from proxy.tempfiles import UploadSet

_PATH = re.compile(r" - at `\$\.?(.*)`$")
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")
_FIELD_NAME = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_IMAGE_PART = re.compile(r"^image(\[\d*\])?$")
_MAX_NESTING = 4
_WRITE_BLOCK = 256 * 1024
_FLUSH_BLOCK = 64 * 1024
# A form's boundaries, headers and fields: spool_bytes bounds its parts (4 x 1 MiB fit).
_FRAMING = 64 * 1024

T = TypeVar("T", bound=msgspec.Struct)


def media_type(request: web.Request) -> str:
    # Not request.content_type: aiohttp parses it with the email package, about a
    # tenth of a small edit's CPU; the bare type is all the dispatch needs.
    raw = request.headers.get(hdrs.CONTENT_TYPE, "")
    return raw.partition(";")[0].strip().lower()


def _validation_error(exc: msgspec.ValidationError) -> InvalidRequest:
    text = str(exc)
    match = _PATH.search(text)
    param = match.group(1) if match else None
    message = text[: match.start()] if match else text
    # "Object missing required field `x`" / "contains unknown field `x`": name x itself.
    named = _NAMED_FIELD.search(message)
    if named is not None:
        param = f"{param}.{named.group(1)}" if param else named.group(1)
    where = f" (at '{param}')" if param else ""
    return InvalidRequest(f"{message}{where}", param=param)


def convert(fields: dict[str, Any], typ: type[T], *, strict: bool = True) -> T:
    try:
        return msgspec.convert(fields, typ, strict=strict)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None


def split_known(
    obj: dict[str, Any], known: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a body into the fields the proxy validates and the ones it forwards."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in obj.items():
        (fields if key in known else extra)[key] = value
    return fields, extra


class MultipartEdit(msgspec.Struct):
    form: EditForm
    extra: dict[str, Any]
    images: list[StoredImage]
    mask: StoredImage | None
    # With ``digest``: the form as a JSON value, its files by SHA-256 (hashed as
    # they stream in), for an Idempotency-Key's fingerprint (proxy.idempotency).
    canonical: dict[str, Any] | None = None


class _Digesting:
    """A part's chunks, hashed as they are read."""

    def __init__(self, reader: FormReader) -> None:
        self._reader = reader
        self.sha = hashlib.sha256()

    async def read(self) -> bytes | memoryview:
        chunk = await self._reader.read()
        self.sha.update(chunk)
        return chunk

    def ready(self) -> bool:
        return self._reader.ready()


async def read_multipart(
    request: web.Request,
    limits: Limits,
    uploads: UploadSet,
    *,
    digest: bool = False,
    watch: Watch | None = None,
) -> MultipartEdit:
    """Stream an OpenAI-SDK-shaped multipart edit into temp files and typed fields
    (and, with ``digest``, its canonical form: ``MultipartEdit.canonical``)."""
    timeout, cap = limits.client_idle_timeout_s, limits.body_cap
    async with request_body(request, timeout, cap) as body:
        boundary = boundary_of(request.headers.get(hdrs.CONTENT_TYPE, ""))
        # A body declared larger than the spool (and its form's framing) goes straight
        # to disk: holding its first MiBs in memory would only mean copying them out.
        declared = request.content_length
        fits = declared is None or declared <= limits.spool_bytes + _FRAMING
        spool = limits.spool_bytes if fits else 0
        form = FormReader(body, boundary)
        # A partial rather than a closure: fewer objects alive while the body comes.
        store = functools.partial(
            _stream_file, limits=limits, uploads=uploads, spool=spool
        )
        return await read_form(form, limits, store, digest=digest, watch=watch)


# What becomes of a file part: spooled (an edit), or only looked at (a quote).
FileSink = Callable[[Chunks, Part, str], Awaitable[StoredImage]]


async def read_form(
    reader: FormReader,
    limits: Limits,
    sink: FileSink,
    *,
    digest: bool = False,
    watch: Watch | None = None,
) -> MultipartEdit:
    """An edit's form: its text fields typed, its file parts given to ``sink``."""
    raw_fields: dict[str, Any] = {}
    images: list[StoredImage] = []
    mask: StoredImage | None = None
    files: list[list[str]] | None = [] if digest else None
    field_count = 0
    charset = "utf-8"
    first = True
    while (part := await reader.next()) is not None:
        if part.nested:
            raise InvalidRequest("nested multipart bodies are not supported")
        name = part.name
        if not name:
            raise InvalidRequest("a multipart part has no name")
        if first and name == "_charset_" and part.filename is None:
            # RFC 7578 4.6: the charset of the text fields that follow.
            label = await _read_text(reader, part, name, limits, "ascii")
            charset = _charset(label, name)
            first = False
            continue
        first = False
        file = _IMAGE_PART.match(name) is not None or name == "mask"
        mine = await watch.part(raw_fields, part, reader, file=file) if watch else None
        if file:
            if len(images) + (mask is not None) >= limits.max_files:
                raise InvalidRequest(
                    f"at most {limits.max_files} files are allowed", param=name
                )
            source = _Digesting(reader) if files is not None else mine or reader
            stored = await sink(source, part, name)
            if isinstance(source, _Digesting) and files is not None:
                files.append([name, stored.filename, source.sha.hexdigest()])
            if name == "mask":
                if mask is not None:
                    raise InvalidRequest(
                        "only one 'mask' part is allowed", param="mask"
                    )
                mask = stored
            else:
                images.append(stored)
            continue
        if part.filename is not None:
            raise InvalidRequest(
                f"unexpected file part '{name}'; images go in 'image', 'image[]' or "
                "'mask'",
                param=name,
            )
        field_count += 1
        if field_count > limits.max_fields:
            raise InvalidRequest(f"at most {limits.max_fields} text fields are allowed")
        text = await _read_text(reader, part, name, limits, charset)
        _put_field(raw_fields, name, text)
    if not images:
        raise InvalidRequest(
            "at least one 'image' file part is required", param="image"
        )
    fields, extra = split_known(raw_fields, FORM_FIELDS)
    form = convert(fields, EditForm, strict=False)
    canonical = None if files is None else {"fields": raw_fields, "files": files}
    return MultipartEdit(
        form=form, extra=extra, images=images, mask=mask, canonical=canonical
    )


async def _stream_file(
    reader: Chunks,
    part: Part,
    name: str,
    limits: Limits,
    uploads: UploadSet,
    spool: int,
) -> StoredImage:
    param = "mask" if name == "mask" else "image"
    # The first chunk, joined with the next ones only if it is too short to sniff.
    chunk: bytes | memoryview = await reader.read()
    while 0 < len(chunk) < SNIFF_BYTES and (more := await reader.read()):
        chunk = bytes(chunk) + more
    if not chunk:
        raise InvalidRequest(f"file part '{name}' is empty", param=param)
    head = bytes(chunk[:SNIFF_BYTES])
    kind = require_image(head, param=param, mask=param == "mask")
    filename = part.filename or ""
    # Spool in memory while the request's budget lasts; the rest streams to disk.
    # The pieces are views of the socket's chunks: joined, they are copied once.
    pieces: list[bytes | memoryview] = []
    spooled = 0
    while chunk and uploads.hold(len(chunk), spool):
        pieces.append(chunk)
        spooled += len(chunk)
        check_file(name, spooled, limits)
        chunk = await reader.read()
    if not chunk:
        data = b"".join(pieces)
        return StoredImage(
            content_type=kind, size=len(data), filename=filename, data=data, field=name
        )
    path, f = await uploads.new_file()
    size = 0
    try:
        # What was held in memory goes first, piece by piece (no second copy of it),
        # its budget given back as it goes.
        for piece in pieces:
            size += len(piece)
            await f.write(piece)
            uploads.wrote(len(piece))
            uploads.release(len(piece))
        pieces.clear()
        # Then the rest in blocks of at least _WRITE_BLOCK: each write is a trip to
        # aiofiles' thread, and the socket hands out chunks of tens of KiB. A block
        # of _FLUSH_BLOCK or more goes to disk before waiting for the client, so a
        # burst of uploads waiting for their clients holds little each (issue 19).
        buf = bytearray(chunk)
        del chunk  # a view of the socket's whole chunk: not kept across waits
        while True:
            while len(buf) < _WRITE_BLOCK and (
                len(buf) < _FLUSH_BLOCK or reader.ready()
            ):
                chunk = await reader.read()
                if not chunk:
                    break
                buf += chunk
                del chunk
            if not buf:
                break
            size += len(buf)
            check_file(name, size, limits)
            await f.write(buf)
            uploads.wrote(len(buf))
            buf = bytearray()
    finally:
        await asyncio.shield(f.close())
    return StoredImage(
        content_type=kind, size=size, filename=filename, path=path, field=name
    )


def check_file(name: str, size: int, limits: Limits) -> None:
    if size > limits.max_file_bytes:
        param = "mask" if name == "mask" else "image"
        raise too_large(f"file part '{name}'", limits.max_file_bytes, param)


async def _read_text(
    reader: FormReader, part: Part, name: str, limits: Limits, charset: str
) -> str:
    buf = bytearray()
    while chunk := await reader.read():
        buf += chunk
        if len(buf) > limits.max_field_bytes:
            raise too_large(f"text field '{name}'", limits.max_field_bytes, name)
    if part.charset is not None:
        charset = _charset(part.charset, name)
    try:
        return buf.decode(charset)
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"text field '{name}' is not valid {charset}", param=name
        ) from None


def _charset(label: str, name: str) -> str:
    codec = text_codec(label)
    if codec is None:
        raise InvalidRequest(
            f"text field '{name}' names charset {label.strip()[:40]!r}; only "
            "utf-8, us-ascii and iso-8859-1 are accepted",
            param=name,
        )
    return codec


def _put_field(fields: dict[str, Any], name: str, value: str) -> None:
    """Place ``a``, ``a[]``, ``a[b]`` or ``a[b][c]`` form names into nested values."""
    if "[" not in name and "]" not in name and name:
        # The common case, a plain name: no regex, no walk.
        if name in fields:
            raise InvalidRequest(f"field '{name}' is given more than once", param=name)
        fields[name] = value
        return
    match = _FIELD_NAME.match(name)
    if match is None:
        raise InvalidRequest(f"invalid field name {name!r}", param=name)
    keys = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
    if len(keys) > _MAX_NESTING:
        raise InvalidRequest(f"field name {name!r} is nested too deeply", param=name)
    target: Any = fields
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        nxt = keys[i + 1] if not last else None
        if isinstance(target, list):
            if key != "" or not last:
                raise InvalidRequest(f"invalid field name {name!r}", param=name)
            target.append(value)
            return
        if last:
            if key in target:
                raise InvalidRequest(
                    f"field '{name}' is given more than once", param=name
                )
            target[key] = value
            return
        child = target.setdefault(key, [] if nxt == "" else {})
        if isinstance(child, str) or (nxt == "") != isinstance(child, list):
            raise InvalidRequest(
                f"field '{name}' conflicts with another field", param=name
            )
        target = child


def require_json_or_multipart(request: web.Request, *, multipart: bool) -> str:
    kind = media_type(request)
    if kind == "application/json" or (multipart and kind == "multipart/form-data"):
        return kind
    accepted = (
        "application/json or multipart/form-data" if multipart else "application/json"
    )
    got = f"not '{kind}'" if kind else "and the request has none"
    raise UnsupportedMediaType(
        f"Content-Type must be {accepted}, {got}", code="unsupported_media_type"
    )
