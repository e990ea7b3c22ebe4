"""Image bytes: type sniffing from magic bytes and data-URL decoding.

A part's declared Content-Type is never trusted (SDKs send application/octet-stream for
raw bytes); the first bytes decide.
"""

from __future__ import annotations

import binascii

import pybase64

from proxy.errors import InvalidRequest
from proxy.models import ImageInput, StoredImage

PNG = "image/png"
JPEG = "image/jpeg"
WEBP = "image/webp"
IMAGE_TYPES = frozenset({PNG, JPEG, WEBP})
EXTENSIONS = {PNG: "png", JPEG: "jpg", WEBP: "webp"}

SNIFF_BYTES = 12


def sniff(head: bytes) -> str | None:
    """The image type of the first bytes of a file, or None if it is none we accept."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None


def require_image(head: bytes, *, param: str, mask: bool = False) -> str:
    kind = sniff(head)
    if kind is None:
        raise InvalidRequest(
            f"'{param}' is not a PNG, JPEG or WebP image",
            param=param,
            code="invalid_image",
        )
    if mask and kind != PNG:
        raise InvalidRequest(
            f"'{param}' must be a PNG image (its alpha channel marks the edit area)",
            param=param,
            code="invalid_image",
        )
    return kind


def decode_data_url(url: str, *, param: str) -> bytes:
    """Decode ``data:image/...;base64,<data>``; anything else is a 400 naming ``param``."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise InvalidRequest(f"'{param}' is not a valid data URL", param=param)
    check_data_media(header[5:], param=param)
    try:
        # SIMD base64: 0.07 ms instead of 2.6 ms per MiB with binascii (bench/).
        return pybase64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"'{param}' does not hold valid base64 data", param=param
        ) from exc


def check_data_media(media: str, *, param: str) -> None:
    """A 400 unless a data URL's ``media`` (between ``data:`` and the comma) says
    ``image/...;base64``."""
    meta = media.split(";")
    if not meta[0].lower().startswith("image/") or "base64" not in (
        m.strip().lower() for m in meta[1:]
    ):
        raise InvalidRequest(
            f"'{param}' must be a data:image/...;base64, URL", param=param
        )


def b64(data: bytes) -> str:
    """Standard base64 text of ``data`` (SIMD, like the decode above)."""
    return pybase64.b64encode(data).decode("ascii")


def require_stored(image: ImageInput, *, provider: str, param: str) -> StoredImage:
    """The bytes of an input for an adapter that must send them.

    ``proxy.inputs`` resolves URLs and stored file ids before the adapter runs, so this
    only refuses what a provider cannot take (an id of OpenAI's own, say).
    """
    if isinstance(image, StoredImage):
        return image
    raise InvalidRequest(
        f"provider '{provider}' needs the bytes of '{param}': upload the file or send a "
        "data: URL",
        param=param,
    )
