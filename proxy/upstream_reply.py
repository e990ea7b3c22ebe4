"""A provider's reply as ``proxy.upstream`` hands it to adapters, read with a cap, and
the one map from aiohttp client exceptions to the proxy's ``UpstreamError`` tree.

Nothing else catches aiohttp client exceptions on the way to a provider: ``Upstream``
calls ``mapped``/``map_errors`` for every send, stream and download.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import aiohttp
import msgspec
from aiohttp import hdrs
from multidict import CIMultiDictProxy
from prometheus_client import Counter

from proxy.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)


class UpstreamResponse(msgspec.Struct, frozen=True):
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class UpstreamStream:
    """A reply whose body is read as it arrives; read errors map like any other."""

    def __init__(
        self, provider: str, resp: aiohttp.ClientResponse, cap: int, received: Counter
    ) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self._provider = provider
        self._resp = resp
        self._cap = cap
        self._received = received
        self._finished = False
        self._failed = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        if self._failed:
            return "error"
        if self.ok and not self._finished:
            return "aborted"  # the client left before the reply ended
        return f"{self.status // 100}xx"

    async def read(self) -> UpstreamResponse:
        """The whole (capped) body, e.g. of an error reply."""
        async with self._errors():
            body = await read_capped(self._resp, self._cap, self._provider)
        self._finished = True
        return UpstreamResponse(self.status, self.headers, body)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body in the pieces it arrives in."""
        async with self._errors():
            async for chunk in self._resp.content.iter_any():
                self._received.inc(len(chunk))
                yield chunk
        self._finished = True

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            async with map_errors(self._provider):
                yield
        except UpstreamError:
            self._failed = True
            raise


def _too_large(provider: str, cap: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"provider '{provider}' sent a reply over {cap} bytes",
        provider=provider,
        code="upstream_reply_too_large",
    )


async def read_capped(resp: aiohttp.ClientResponse, cap: int, provider: str) -> bytes:
    length = resp.content_length
    if length is not None:
        if length > cap:
            raise _too_large(provider, cap)
        # Content-Length counts the wire bytes: a compressed reply can inflate far
        # past it, so only an identity body is read whole.
        if resp.headers.get(hdrs.CONTENT_ENCODING, "identity") == "identity":
            return await resp.read()
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(256 * 1024):
        buf += chunk
        if len(buf) > cap:
            raise _too_large(provider, cap)
    return bytes(buf)


@contextlib.asynccontextmanager
async def map_errors(provider: str) -> AsyncIterator[None]:
    try:
        yield
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise mapped(provider, exc) from exc


def mapped(provider: str, exc: TimeoutError | aiohttp.ClientError) -> UpstreamError:
    """The proxy's error for an aiohttp client error (first match in the map)."""
    for exc_type, cls, what, code, unsent in _ERROR_MAP:
        if isinstance(exc, exc_type):
            detail = f" ({type(exc).__name__})" if cls is UpstreamUnavailable else ""
            err = cls(
                f"provider '{provider}' {what}{detail}", provider=provider, code=code
            )
            err.unsent = unsent
            return err
    raise AssertionError(exc)  # pragma: no cover - the map ends with base classes


# aiohttp client exceptions → the proxy's errors, most specific first. `unsent`: the
# request cannot have reached the provider, so retrying it cannot bill twice.
_ERROR_MAP: tuple[tuple[type[BaseException], type[UpstreamError], str, str, bool], ...] = (
    (aiohttp.ConnectionTimeoutError, UpstreamTimeout,
     "did not accept a connection in time", "upstream_timeout", True),
    (aiohttp.ClientConnectorError, UpstreamUnavailable,
     "is unreachable", "upstream_unavailable", True),
    (TimeoutError, UpstreamTimeout, "did not answer in time", "upstream_timeout", False),
    (aiohttp.ClientPayloadError, UpstreamProtocolError,
     "sent a malformed or truncated reply", "upstream_protocol_error", False),
    (aiohttp.ClientResponseError, UpstreamProtocolError,
     "sent an invalid HTTP reply", "upstream_protocol_error", False),
    # Disconnects, resets and other connection failures after sending began.
    (aiohttp.ClientError, UpstreamUnavailable,
     "is unreachable", "upstream_unavailable", False),
)  # fmt: skip
