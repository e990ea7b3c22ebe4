"""Input preparation shared by the JSON providers of this package: the client's mask
as the white = edit PNG that FLUX Fill, Replicate models and Bedrock expect."""

from __future__ import annotations

from proxy.errors import InvalidRequest
from proxy.masks import to_white_edit_mask
from proxy.models import EditJob, StoredImage


async def white_mask(job: EditJob, *, provider: str) -> bytes | None:
    """The mask converted against the first image (both must be bytes the proxy holds)."""
    if job.mask is None:
        return None
    first = job.images[0] if job.images else None
    if not isinstance(job.mask, StoredImage) or not isinstance(first, StoredImage):
        raise InvalidRequest(
            f"provider '{provider}' needs the mask and the first image as bytes "
            "(an upload or a data: URL)",
            param="mask",
        )
    return await to_white_edit_mask(job.mask, first)
