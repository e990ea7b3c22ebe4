"""Wire types: the public request shapes, the provider-neutral job, the result.

Request Structs carry every constraint of the API description, so validation is
msgspec's decode and its error path names the field. Adapters only ever see ``EditJob``.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, Literal

import aiofiles
import msgspec
import pybase64

from proxy.livebody import Pipe

Prompt = Annotated[str, msgspec.Meta(min_length=1, max_length=32000)]
# "<provider>/<model id>" or a configured alias; the router decides which.
ModelName = Annotated[str, msgspec.Meta(pattern=r"^\S+$", max_length=256)]
# OpenAI's own cap on an image_url (a data URL of a ~15 MiB image fits).
MAX_IMAGE_URL = 20 * 1024 * 1024
ImageUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_IMAGE_URL)]
FileId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class ImageRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of ``images[]`` or the ``mask``: exactly one of the two keys."""

    file_id: FileId | None = None
    image_url: ImageUrl | None = None


class RequestFields(msgspec.Struct, frozen=True, kw_only=True):
    """The request fields, defined once: the intake structs and ``EditJob`` extend this,
    and ``JOB_FIELDS``/``FORWARDED_FIELDS`` name subsets of it.

    The constraints apply where a client's request is converted; a job built from a
    validated request is not checked again.
    """

    model: ModelName
    prompt: Prompt
    n: Annotated[int, msgspec.Meta(ge=1, le=10)] | None = None
    size: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None
    quality: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    background: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    output_format: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    output_compression: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    input_fidelity: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    moderation: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    partial_images: Annotated[int, msgspec.Meta(ge=0, le=3)] | None = None
    stream: bool | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    metadata: dict[str, Any] | None = None


# The fields a job takes from its request as they are: `model` is replaced by the
# route's provider model id and `stream` becomes a bool.
JOB_FIELDS = tuple(
    name for name in RequestFields.__struct_fields__ if name not in ("model", "stream")
)
# The optional fields an OpenAI-shaped upstream gets under their own names when set.
FORWARDED_FIELDS = tuple(name for name in JOB_FIELDS if name != "prompt")
# Their values, in that order, in one call rather than a getattr each.
forwarded_values = operator.attrgetter(*FORWARDED_FIELDS)
_job_values = operator.attrgetter(*JOB_FIELDS)


class _Fields(RequestFields, frozen=True, kw_only=True):
    """Fields shared by every intake; each unknown field is forwarded to the provider."""

    # Values are checked by proxy.headers, so an error can name the header.
    extra_headers: dict[str, Any] | None = None


class EditRequest(_Fields, frozen=True, kw_only=True):
    """The JSON edit body (``images: [{file_id|image_url}]``)."""

    images: Annotated[list[ImageRef], msgspec.Meta(min_length=1, max_length=16)]
    mask: ImageRef | None = None


class EditForm(_Fields, frozen=True, kw_only=True):
    """The text fields of a multipart edit; the files arrive as parts."""


class GenerateRequest(_Fields, frozen=True, kw_only=True):
    """The JSON generation body."""


EDIT_FIELDS = frozenset(EditRequest.__struct_fields__)
FORM_FIELDS = frozenset(EditForm.__struct_fields__)
GENERATE_FIELDS = frozenset(GenerateRequest.__struct_fields__)


class StoredImage(msgspec.Struct, frozen=True):
    """Image bytes the proxy holds: a temp file (multipart), bytes (a small data URL,
    a part spooled in memory) or the base64 of a big data URL, decoded only if sent
    as bytes (``read``)."""

    content_type: str
    size: int
    filename: str
    path: str | None = None
    data: bytes | None = None
    # The base64 of the client's data URL (a view of the request body), kept so JSON
    # upstreams get it without encoding it again; sent as data:<content_type>;base64.
    b64: bytes | memoryview | None = None
    # Its first bytes decoded (the header the gateway reads), kept with ``b64``.
    b64_head: bytes = b""
    # The multipart part it came in ("image", "image[]", "mask"), kept for upstreams
    # that take the same names.
    field: str = ""
    # Set for an image forwarded while it arrives (``proxy.forward``): its bytes go
    # by once, through this pipe; ``size`` is then its first bytes' only.
    live: Pipe | None = None

    def head(self, size: int) -> bytes | None:
        """Its first ``size`` bytes when held in memory (as bytes or as base64)."""
        if self.data is not None:
            return self.data[:size]
        if self.b64 is None:
            return None
        if len(self.b64_head) >= min(size, self.size):
            return self.b64_head[:size]
        return pybase64.b64decode(self.b64[: -(-size // 3) * 4])[:size]

    async def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.b64 is not None:
            return await decode_base64(self.b64)
        assert self.path is not None
        async with aiofiles.open(self.path, "rb") as f:
            return await f.read()


# Base64 decoded in a worker thread from this size (pybase64 lets the GIL go): a few
# ms on the event loop below it.
THREAD_BASE64 = 2 * 1024 * 1024


async def decode_base64(b64: bytes | memoryview) -> bytes:
    """Base64 already validated, decoded (once, where bytes must be sent)."""
    if len(b64) < THREAD_BASE64:
        return pybase64.b64decode(b64)
    return await asyncio.to_thread(pybase64.b64decode, b64)


class RemoteImage(msgspec.Struct, frozen=True):
    """An https URL the client gave; passed to providers that take URLs."""

    url: str


class FileRef(msgspec.Struct, frozen=True):
    """A ``file_id`` the proxy does not hold; passed to providers with their own ids."""

    file_id: str


ImageInput = StoredImage | RemoteImage | FileRef


class EditJob(RequestFields, frozen=True, kw_only=True):
    """One validated, provider-neutral request. Adapters never see raw requests.

    ``model`` is the provider's model id (the "provider/" prefix stripped); the other
    request fields are the client's, as ``from_request`` copies them.
    """

    operation: Literal["edit", "generate"]
    provider: str  # the configured provider name
    model: str
    source: Literal["json", "multipart"]
    images: tuple[ImageInput, ...] = ()
    mask: ImageInput | None = None
    stream: bool = False
    # Fields the proxy does not know, forwarded to the provider unchanged.
    extra: dict[str, Any] = {}
    extra_headers: dict[str, str] = {}
    # A stable, hashed identifier of the client key (``KeyRing.client_id``) for
    # providers' abuse tracking; never the key or its name. None without client keys.
    client_id: str | None = None

    @classmethod
    def from_request(
        cls,
        fields: RequestFields,
        *,
        operation: Literal["edit", "generate"],
        provider: str,
        model: str,
        source: Literal["json", "multipart"],
        extra: dict[str, Any],
        extra_headers: dict[str, str],
        images: tuple[ImageInput, ...] = (),
        mask: ImageInput | None = None,
    ) -> EditJob:
        copied = dict(zip(JOB_FIELDS, _job_values(fields), strict=True))
        return cls(
            operation=operation,
            provider=provider,
            model=model,
            source=source,
            images=images,
            mask=mask,
            stream=bool(fields.stream),
            extra=extra,
            extra_headers=extra_headers,
            **copied,
        )


class Usage(msgspec.Struct, frozen=True):
    """OpenAI's image usage block; every count optional so partial blocks still price."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: TokenDetails | None = None
    output_tokens_details: TokenDetails | None = None


class TokenDetails(msgspec.Struct, frozen=True):
    text_tokens: int | None = None
    image_tokens: int | None = None


class EditResult(msgspec.Struct, frozen=True, kw_only=True):
    """An OpenAI-shaped JSON object from the provider, plus what pricing needs.

    ``body`` is the encoded object without ``provider``/``cost``; the handler splices
    those in so a large base64 reply is never decoded and re-encoded.
    """

    body: bytes
    images: int
    usage: Usage | None = None
    cost: float | None = None


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider accepts, declared by its adapter and checked before sending.

    The handler uses these to refuse what a provider cannot take (a clear 400 before any
    upstream call) and to turn inputs into a form the adapter can send: image URLs are
    fetched and stored file ids resolved to bytes unless the provider takes them itself.
    """

    edit: bool = True
    generate: bool = True
    max_images: int = 16
    mask: bool = True
    image_types: frozenset[str] = frozenset({"image/png", "image/jpeg", "image/webp"})
    max_image_bytes: int = 50 * 1024 * 1024
    # The provider fetches https image URLs itself.
    image_urls: bool = False
    # The provider has its own file ids (e.g. OpenAI's "file-..."), passed through.
    file_ids: bool = False
    # The provider honours `n` natively; otherwise the proxy makes n calls.
    native_n: bool = True
    # The provider streams partial images (server-sent events).
    streaming: bool = False
