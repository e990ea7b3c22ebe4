"""Request intake: Content-Type dispatch, size and count limits, validation.

JSON bodies are read with a cap and converted by msgspec; multipart file parts stream
chunk by chunk into temp files owned by the request's ``UploadSet`` (never a whole part
in memory), and text fields are converted to the same typed request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any, TypeVar

import msgspec
from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import BadContentDispositionHeader
from aiohttp.web_protocol import RequestPayloadError

from proxy.config import Limits
from proxy.disposition import part_names
from proxy.errors import (
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from proxy.images import SNIFF_BYTES, decode_data_url, require_image
from proxy.models import (
    FORM_FIELDS,
    EditForm,
    FileRef,
    ImageInput,
    ImageRef,
    RemoteImage,
    StoredImage,
)
from proxy.uploads import UploadSet

_CHUNK = 256 * 1024
# What aiohttp's multipart reader raises on a body that is not valid multipart. Its
# content-disposition complaint is a warning; where warnings are errors it is raised.
_MALFORMED = (
    ValueError,
    AssertionError,
    KeyError,
    RuntimeError,
    HttpProcessingError,
    BadContentDispositionHeader,
)
_PATH = re.compile(r" - at `\$\.?(.*)`$")
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")
_FIELD_NAME = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_IMAGE_PART = re.compile(r"^image(\[\d*\])?$")
_MAX_NESTING = 4

T = TypeVar("T", bound=msgspec.Struct)
T_co = TypeVar("T_co")

_json_decoder = msgspec.json.Decoder()


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


async def read_json(request: web.Request, limits: Limits) -> dict[str, Any]:
    """Read and decode a JSON object body, capped at ``max_json_bytes``."""
    length = request.content_length
    if length is not None and length > limits.max_json_bytes:
        raise _too_large("request body", limits.max_json_bytes)
    body = bytearray()
    while chunk := await _idle(request.content.readany(), limits):
        body += chunk
        if len(body) > limits.max_json_bytes:
            raise _too_large("request body", limits.max_json_bytes)
    try:
        obj = _json_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise InvalidRequest("the JSON body is nested too deeply") from None
    if not isinstance(obj, dict):
        raise InvalidRequest("the body must be a JSON object")
    return obj


def split_known(
    obj: dict[str, Any], known: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a body into the fields the proxy validates and the ones it forwards."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in obj.items():
        (fields if key in known else extra)[key] = value
    return fields, extra


def resolve_ref(ref: ImageRef, *, param: str, mask: bool = False) -> ImageInput:
    """Turn one ``{file_id|image_url}`` into an image input, decoding data URLs."""
    if (ref.file_id is None) == (ref.image_url is None):
        raise InvalidRequest(
            f"'{param}' must have exactly one of 'file_id' or 'image_url'", param=param
        )
    if ref.file_id is not None:
        return FileRef(ref.file_id)
    url = ref.image_url
    assert url is not None
    param = f"{param}.image_url"
    scheme = url[:8].lower()
    if scheme.startswith("data:"):
        data = decode_data_url(url, param=param)
        kind = require_image(data[:SNIFF_BYTES], param=param, mask=mask)
        # Upstreams get the client's base64 as is, under the type the bytes have (a
        # client may label a PNG image/jpeg, or write DATA:IMAGE/PNG;BASE64,...).
        prefix = f"data:{kind};base64,"
        if not url.startswith(prefix):
            url = prefix + url.partition(",")[2]
        return StoredImage(
            content_type=kind, size=len(data), filename="", data=data, data_url=url
        )
    # http:// too, so the fetch policy can name it (allowed only by config).
    if scheme.startswith(("https://", "http://")) and " " not in url:
        return RemoteImage(url)
    raise InvalidRequest(
        f"'{param}' must be an https URL or a data:image/...;base64, URL", param=param
    )


def _too_large(what: str, cap: int, param: str | None = None) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is larger than the limit of {cap} bytes",
        param=param,
        code="payload_too_large",
    )


class MultipartEdit(msgspec.Struct):
    form: EditForm
    extra: dict[str, Any]
    images: list[StoredImage]
    mask: StoredImage | None


async def read_multipart(
    request: web.Request, limits: Limits, uploads: UploadSet
) -> MultipartEdit:
    """Stream an OpenAI-SDK-shaped multipart edit into temp files and typed fields."""
    cap = limits.body_cap
    if request.content_length is not None and request.content_length > cap:
        raise _too_large("request body", cap)
    try:
        reader = await request.multipart()
    except _MALFORMED as exc:
        raise InvalidRequest(f"malformed multipart body: {exc}") from None
    raw_fields: dict[str, Any] = {}
    images: list[StoredImage] = []
    mask: StoredImage | None = None
    field_count = 0
    while True:
        try:
            part = await _idle(reader.next(), limits)
        except _MALFORMED as exc:
            raise InvalidRequest(f"malformed multipart body: {exc}") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise InvalidRequest("nested multipart bodies are not supported")
        name, filename = part_names(part)
        if not name:
            raise InvalidRequest("a multipart part has no name")
        if _IMAGE_PART.match(name) or name == "mask":
            if len(images) + (mask is not None) >= limits.max_files:
                raise InvalidRequest(
                    f"at most {limits.max_files} files are allowed", param=name
                )
            stored = await _stream_file(request, part, name, limits, uploads)
            if name == "mask":
                if mask is not None:
                    raise InvalidRequest(
                        "only one 'mask' part is allowed", param="mask"
                    )
                mask = stored
            else:
                images.append(stored)
            continue
        if filename is not None:
            raise InvalidRequest(
                f"unexpected file part '{name}'; images go in 'image', 'image[]' or "
                "'mask'",
                param=name,
            )
        field_count += 1
        if field_count > limits.max_fields:
            raise InvalidRequest(f"at most {limits.max_fields} text fields are allowed")
        _put_field(raw_fields, name, await _read_text(request, part, name, limits))
    if not images:
        raise InvalidRequest(
            "at least one 'image' file part is required", param="image"
        )
    fields, extra = split_known(raw_fields, FORM_FIELDS)
    form = convert(fields, EditForm, strict=False)
    return MultipartEdit(form=form, extra=extra, images=images, mask=mask)


def _check_body(request: web.Request, cap: int) -> None:
    if request.content.total_bytes > cap:
        raise _too_large("request body", cap)


async def _stream_file(
    request: web.Request,
    part: BodyPartReader,
    name: str,
    limits: Limits,
    uploads: UploadSet,
) -> StoredImage:
    param = "mask" if name == "mask" else "image"
    head = b""
    while len(head) < SNIFF_BYTES:
        piece = await _read_chunk(part, limits)
        if not piece:
            break
        head += piece
    if not head:
        raise InvalidRequest(f"file part '{name}' is empty", param=param)
    kind = require_image(head[:SNIFF_BYTES], param=param, mask=param == "mask")
    filename = part_names(part)[1] or ""
    # Spool in memory while the request's budget lasts; the rest streams to disk.
    buf = bytearray()
    chunk: bytes = head
    while chunk and uploads.spooled + len(buf) + len(chunk) <= limits.spool_bytes:
        buf += chunk
        _check_file(request, name, len(buf), limits)
        chunk = await _read_chunk(part, limits)
    if not chunk:
        uploads.spooled += len(buf)
        data = bytes(buf)
        return StoredImage(
            content_type=kind, size=len(data), filename=filename, data=data
        )
    path, f = await uploads.new_file()
    size = 0
    try:
        # What was spooled (at most spool_bytes) plus the chunk that overflowed it.
        block: bytes | bytearray = buf + chunk
        while block:
            size += len(block)
            _check_file(request, name, size, limits)
            await f.write(block)
            uploads.wrote(len(block))
            block = await _read_chunk(part, limits)
    finally:
        await asyncio.shield(f.close())
    return StoredImage(content_type=kind, size=size, filename=filename, path=path)


def _check_file(request: web.Request, name: str, size: int, limits: Limits) -> None:
    if size > limits.max_file_bytes:
        param = "mask" if name == "mask" else "image"
        raise _too_large(f"file part '{name}'", limits.max_file_bytes, param)
    _check_body(request, limits.body_cap)


async def _idle(read: Awaitable[T_co], limits: Limits) -> T_co:
    """Await one read of the body, bounded by the client idle timeout."""
    try:
        async with asyncio.timeout(limits.client_idle_timeout_s):
            return await read
    except TimeoutError:
        raise RequestTimeout(
            f"the request body stalled for over {limits.client_idle_timeout_s:g} s",
            code="request_timeout",
        ) from None
    except RequestPayloadError as exc:
        # aiohttp could not decode the body (a Content-Encoding that is not what it
        # says): the client's fault, and every body read comes through here.
        cause = exc.__cause__
        reason = cause.message if isinstance(cause, HttpProcessingError) else str(exc)
        raise InvalidRequest(f"the request body cannot be read: {reason}") from None


async def _read_chunk(part: BodyPartReader, limits: Limits) -> bytes:
    try:
        return await _idle(part.read_chunk(_CHUNK), limits)
    except _MALFORMED as exc:
        raise InvalidRequest(f"malformed multipart body: {exc}") from None


async def _read_text(
    request: web.Request, part: BodyPartReader, name: str, limits: Limits
) -> str:
    buf = bytearray()
    while chunk := await _read_chunk(part, limits):
        buf += chunk
        if len(buf) > limits.max_field_bytes:
            raise _too_large(f"text field '{name}'", limits.max_field_bytes, name)
        _check_body(request, limits.body_cap)
    charset = part.get_charset(default="utf-8")
    try:
        return buf.decode(charset)
    except (UnicodeDecodeError, LookupError):
        raise InvalidRequest(
            f"text field '{name}' is not valid {charset}", param=name
        ) from None


def _put_field(fields: dict[str, Any], name: str, value: str) -> None:
    """Place ``a``, ``a[]``, ``a[b]`` or ``a[b][c]`` form names into nested values."""
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
    raise UnsupportedMediaType(
        f"Content-Type must be {accepted}, not '{kind or 'none'}'",
        code="unsupported_media_type",
    )
