"""Input checks shared by the providers of this package: model ids that go into URL
paths, and the client's unknown fields merged into a provider body. Pure; image
preparation (reads, base64, masks) is ``proxy.providers._prepare``'s."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from proxy.errors import InvalidRequest, UnknownModel

# A path segment that cannot climb (".", "..") or smuggle a query, fragment or slash.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def model_path(model: str, *, provider: str, segments: int = 1) -> str:
    """A client's model id, checked before it becomes part of an upstream URL path.

    The gateway's key goes with the request, so ``bfl/../account`` must never reach
    another endpoint of the provider's API.
    """
    parts = model.split("/")
    if len(parts) != segments or not all(_SEGMENT.match(p) for p in parts):
        shape = "/".join(["<name>"] * segments)
        raise UnknownModel(
            f"'{provider}/{model}' is not a valid model name for provider '{provider}' "
            f"(expected {provider}/{shape})"
        )
    return model


def merge_extra(
    own: Mapping[str, Any],
    extra: Mapping[str, Any],
    *,
    reserved: Iterable[str] = (),
    where: str = "",
) -> dict[str, Any]:
    """The adapter's fields plus the client's unknown ones, which may only add.

    A client field the adapter sets itself (or one of ``reserved``, which it sets later
    or must never be sent) is a 400 naming it: ``sampleCount`` must not lift Vertex's
    n <= 4, nor a second form field reach the provider beside the adapter's own.
    ``where`` prefixes the name for nested objects (``generationConfig.``).
    """
    taken = set(own).union(reserved)
    for name in extra:
        if name in taken:
            raise InvalidRequest(
                f"field '{where}{name}' is the gateway's to set for this provider; "
                "use the request's own fields (n, size, output_format, images, mask)",
                param=f"{where}{name}",
            )
    return {**own, **extra}
