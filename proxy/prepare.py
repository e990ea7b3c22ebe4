"""Between intake and adapter: check a job against what its provider accepts.

Everything here runs before any upstream call, so a request a provider cannot take is
refused with a 400 naming the field instead of costing a provider round trip.
"""

from __future__ import annotations

from proxy.errors import InvalidRequest
from proxy.models import EditJob, StoredImage
from proxy.providers.base import Capabilities


def check_capabilities(job: EditJob, caps: Capabilities, *, provider: str) -> None:
    if job.operation == "edit" and not caps.edit:
        raise InvalidRequest(
            f"provider '{provider}' does not support image edits", param="model"
        )
    if job.operation == "generate" and not caps.generate:
        raise InvalidRequest(
            f"provider '{provider}' does not support image generation", param="model"
        )
    if len(job.images) > caps.max_images:
        raise InvalidRequest(
            f"provider '{provider}' accepts at most {caps.max_images} input image(s); "
            f"got {len(job.images)}",
            param="images",
        )
    if job.mask is not None and not caps.mask:
        raise InvalidRequest(
            f"provider '{provider}' does not accept a mask", param="mask"
        )
    inputs = [(f"images[{i}]", img) for i, img in enumerate(job.images)]
    if job.mask is not None:
        inputs.append(("mask", job.mask))
    for param, image in inputs:
        if not isinstance(image, StoredImage):
            continue
        if image.content_type not in caps.image_types:
            allowed = ", ".join(sorted(caps.image_types))
            raise InvalidRequest(
                f"provider '{provider}' does not accept {image.content_type} for "
                f"'{param}'; it takes {allowed}",
                param=param,
            )
        if image.size > caps.max_image_bytes:
            raise InvalidRequest(
                f"'{param}' is {image.size} bytes; provider '{provider}' accepts at "
                f"most {caps.max_image_bytes}",
                param=param,
            )
