"""Amazon Nova Canvas request bodies (also Titan Image, which shares the schema).

https://docs.aws.amazon.com/nova/latest/userguide/image-gen-access.html
Pure functions. Nova's mask is black where INPAINTING changes the image and white
where OUTPAINTING does: ``mask_polarity`` says which, and ``proxy.providers._prepare``
converts OpenAI's mask accordingly before the body is built.
"""

from __future__ import annotations

from typing import Any, Literal

from proxy.errors import InvalidRequest
from proxy.models import EditJob
from proxy.providers import _inputs, _sizes

NOVA_MAX_N = 5
_NOVA_SIZE = "multiples of 16 from 320 to 4096 per side, ratio 1:4 to 4:1, at most 4194304 pixels"
_NOVA_CONFIG_KEYS = frozenset({"seed", "cfgScale"})


def is_nova(model: str) -> bool:
    return "nova-canvas" in model or "titan-image" in model


def nova_size(size: str | None) -> dict[str, int]:
    parsed = _sizes.parse_size(size)
    if parsed is None:
        return {}
    w, h = parsed.width, parsed.height
    if (
        w is None
        or h is None
        or not (320 <= w <= 4096 and 320 <= h <= 4096)
        or w % 16
        or h % 16
        or max(w / h, h / w) > 4
        or w * h > 4_194_304
    ):
        raise _sizes.unsupported_size(size, "amazon", ["auto", _NOVA_SIZE])
    return {"width": w, "height": h}


def _nova_quality(quality: str | None) -> dict[str, str]:
    if quality in ("high", "hd", "premium"):
        return {"quality": "premium"}
    if quality in ("low", "medium", "standard"):
        return {"quality": "standard"}
    return {}


def nova_body(job: EditJob, images: list[str], mask: str | None) -> dict[str, Any]:
    """The Nova Canvas request; ``images`` and ``mask`` are base64, mask already in
    the polarity the chosen task needs."""
    n = job.n or 1
    if n > NOVA_MAX_N:
        raise InvalidRequest(
            f"amazon Nova Canvas makes at most {NOVA_MAX_N} images per request",
            param="n",
        )
    extra = dict(job.extra)
    task = str(extra.pop("task_type", "")).upper() or None
    config: dict[str, Any] = {"numberOfImages": n, **_nova_quality(job.quality)}
    config.update({k: extra.pop(k) for k in _NOVA_CONFIG_KEYS & extra.keys()})
    params: dict[str, Any] = {"text": job.prompt}
    if job.operation == "generate":
        task = "TEXT_IMAGE"
        config.update(nova_size(job.size))
    elif mask is not None or "maskPrompt" in extra:
        task = task if task == "OUTPAINTING" else "INPAINTING"
        _sizes.require_auto(
            job.size, provider="amazon", why="Nova keeps the image size"
        )
        params["image"] = images[0]
        if mask is not None:
            params["maskImage"] = mask
    else:
        task = "IMAGE_VARIATION"
        params["images"] = images
        config.update(nova_size(job.size))
    # Client fields only add to the task's params: never a second prompt or image.
    params = _inputs.merge_extra(
        params, extra, reserved=("text", "image", "images", "maskImage")
    )
    key = {
        "TEXT_IMAGE": "textToImageParams",
        "INPAINTING": "inPaintingParams",
        "OUTPAINTING": "outPaintingParams",
        "IMAGE_VARIATION": "imageVariationParams",
    }[task]
    return {"taskType": task, key: params, "imageGenerationConfig": config}


def mask_polarity(job: EditJob) -> Literal["white", "black"]:
    """The colour that marks Nova's area to change: white for OUTPAINTING only."""
    outpainting = str(job.extra.get("task_type", "")).upper() == "OUTPAINTING"
    return "white" if outpainting else "black"
