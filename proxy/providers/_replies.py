"""Reply handling shared by the JSON providers of this package: a non-2xx reply as the
proxy's error (with the provider's message, parsed by the adapter), and a 2xx body
decoded into the adapter's Struct or a 502 if it is not what the provider documents."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from proxy.errors import UpstreamError, UpstreamProtocolError, from_upstream_status
from proxy.upstream import UpstreamResponse

T = TypeVar("T")


def failure(
    provider: str, resp: UpstreamResponse, message: str | None
) -> UpstreamError:
    return from_upstream_status(
        provider,
        resp.status,
        message=message,
        retry_after=resp.headers.get("Retry-After"),
    )


def unexpected(provider: str) -> UpstreamProtocolError:
    """A 2xx reply that is not what the provider documents."""
    return UpstreamProtocolError(
        f"provider '{provider}' sent an unexpected reply",
        provider=provider,
        code="upstream_protocol_error",
    )


def decode(provider: str, body: bytes, typ: type[T] | msgspec.json.Decoder[T]) -> T:
    """Decode a 2xx body into ``typ`` (or with a module-level Decoder), else a 502."""
    try:
        if isinstance(typ, msgspec.json.Decoder):
            return typ.decode(body)
        return msgspec.json.decode(body, type=typ)
    except msgspec.DecodeError as exc:
        raise unexpected(provider) from exc
