"""``size`` translation: OpenAI's ``"WxH"`` / ``"auto"`` to providers' aspect ratios and
size tiers.

Pure functions over tables. A size a provider cannot honour is a 400 on ``size`` that
names what the provider supports; nothing here talks to the network.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

from proxy.errors import InvalidRequest

# Gemini image models (python-genai ImageConfig.aspect_ratio; 4:5 and 5:4 per Eden's list).
GEMINI_ASPECT_RATIOS = (
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
)  # fmt: skip
# Stability v2beta generation endpoints (`aspect_ratio` form field).
STABILITY_ASPECT_RATIOS = (
    "21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21",
)  # fmt: skip
# Gemini output tiers and their nominal pixel counts (1K = 1024x1024 ...).
GEMINI_IMAGE_SIZES = (("1K", 1024 * 1024), ("2K", 2048 * 2048), ("4K", 4096 * 4096))

# "WxH" maps to the nearest supported ratio when within 3% (1792x1024 -> 16:9) ...
_RATIO_TOLERANCE = math.log(1.03)
# ... and to the smallest tier holding its pixels with 50% slack (1024x1536 -> 1K).
_TIER_SLACK = 1.5

_WXH = re.compile(r"([1-9]\d{0,4})x([1-9]\d{0,4})")
_RATIO = re.compile(r"([1-9]\d{0,2}):([1-9]\d{0,2})")


class Size(NamedTuple):
    """A parsed ``size``: pixel dimensions when given, always the aspect ratio."""

    ratio: Fraction
    width: int | None = None
    height: int | None = None


def parse_size(size: str | None) -> Size | None:
    """``None`` for ``auto``/unset; ``"1024x1536"`` or ``"16:9"`` parsed; else a 400."""
    if size is None or size == "auto":
        return None
    if m := _WXH.fullmatch(size):
        w, h = int(m[1]), int(m[2])
        return Size(Fraction(w, h), w, h)
    if m := _RATIO.fullmatch(size):
        return Size(Fraction(int(m[1]), int(m[2])))
    raise InvalidRequest(
        f"'size' must be 'auto', WIDTHxHEIGHT (e.g. 1024x1536) or an aspect ratio "
        f"(e.g. 16:9); got {size!r}",
        param="size",
    )


def _ratio(text: str) -> Fraction:
    w, _, h = text.partition(":")
    return Fraction(int(w), int(h))


def aspect_ratio(
    size: str | None, supported: Sequence[str], *, provider: str
) -> str | None:
    """The provider's aspect ratio for ``size``; ``None`` means the provider's default."""
    parsed = parse_size(size)
    if parsed is None:
        return None
    best = min(supported, key=lambda r: abs(math.log(_ratio(r) / parsed.ratio)))
    if abs(math.log(_ratio(best) / parsed.ratio)) <= _RATIO_TOLERANCE:
        return best
    raise unsupported_size(size, provider, ["auto", *supported])


def gemini_image_size(
    size: str | None, *, provider: str, model: str = ""
) -> str | None:
    """Gemini's ``imageSize`` tier for a ``WxH`` size; ``None`` keeps the default (1K).

    1K is never sent, so models without tiers accept it; gemini-3.1-flash-lite-image
    makes 1K only, so a larger size is a 400 for it.
    """
    parsed = parse_size(size)
    if parsed is None or parsed.width is None or parsed.height is None:
        return None
    pixels = parsed.width * parsed.height
    for tier, nominal in GEMINI_IMAGE_SIZES:
        if pixels <= nominal * _TIER_SLACK:
            if tier != "1K" and "flash-lite-image" in model:
                raise unsupported_size(size, provider, ["auto", "WxH up to 1K"])
            return None if tier == "1K" else tier
    raise unsupported_size(
        size, provider, ["auto", "WxH up to about 4096x4096", *GEMINI_ASPECT_RATIOS]
    )


def require_auto(size: str | None, *, provider: str, why: str) -> None:
    """Refuse any explicit size where the provider decides the output size itself."""
    if parse_size(size) is not None:
        raise InvalidRequest(
            f"provider '{provider}' cannot honour size {size!r}: {why}; "
            "use size=auto or leave it out",
            param="size",
        )


def unsupported_size(
    size: str | None, provider: str, supported: Sequence[str]
) -> InvalidRequest:
    return InvalidRequest(
        f"provider '{provider}' cannot produce size {size!r}; supported: "
        + ", ".join(supported),
        param="size",
    )
