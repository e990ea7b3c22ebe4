"""A JSON edit's image references (``{file_id|image_url}``) turned into image inputs:
an upload's id, a URL to fetch, or a data URL's bytes checked for what they are."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.errors import InvalidRequest
from proxy.images import SNIFF_BYTES, check_data_media, decode_data_url, require_image
from proxy.json_body import DataUrl
from proxy.models import FileRef, ImageInput, ImageRef, RemoteImage, StoredImage


def resolve_ref(
    ref: ImageRef,
    *,
    param: str,
    mask: bool = False,
    urls: Mapping[str, DataUrl] | None = None,
) -> ImageInput:
    """Turn one ``{file_id|image_url}`` into an image input, decoding data URLs
    (``urls``: those ``read_edit_json`` took out of the body, decoded there)."""
    if (ref.file_id is None) == (ref.image_url is None):
        raise InvalidRequest(
            f"'{param}' must have exactly one of 'file_id' or 'image_url'", param=param
        )
    if ref.file_id is not None:
        return FileRef(ref.file_id)
    url = ref.image_url
    assert url is not None
    param = f"{param}.image_url"
    if urls and (taken := urls.get(url)) is not None:
        check_data_media(taken.media, param=param)
        kind = require_image(taken.head[:SNIFF_BYTES], param=param, mask=mask)
        return StoredImage(kind, taken.size, "", b64=taken.payload, b64_head=taken.head)
    scheme = url[:8].lower()
    if scheme.startswith("data:"):
        data = decode_data_url(url, param=param)
        kind = require_image(data[:SNIFF_BYTES], param=param, mask=mask)
        # Upstreams get the client's base64 as is, under the type the bytes have (a
        # client may label a PNG image/jpeg, or write DATA:IMAGE/PNG;BASE64,...).
        payload = url.partition(",")[2].encode("ascii")
        return StoredImage(kind, len(data), "", data=data, b64=payload)
    # http:// too, so the fetch policy can name it (allowed only by config).
    if scheme.startswith(("https://", "http://")) and " " not in url:
        return RemoteImage(url)
    raise InvalidRequest(
        f"'{param}' must be an https URL or a data:image/...;base64, URL", param=param
    )
