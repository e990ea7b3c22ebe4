"""Provider credentials: what an ``Upstream`` asks for the headers of one request.

A leaf module (it imports nothing of ours), so that ``proxy.upstream``, ``proxy.redact``
and every provider adapter can share these types without importing one another.
Client keys, the other kind of key, live in ``proxy.client_keys``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable


class Auth(Protocol):
    """Supplies the credential headers for one upstream request."""

    async def headers(self) -> Mapping[str, str]: ...

    def secrets(self) -> Sequence[str]:
        """Every secret this source holds now, to be redacted (``proxy.redact``)."""
        ...


class StaticKey:
    """A fixed key sent in one header, e.g. ``Authorization: Bearer <key>``."""

    __slots__ = ("_headers", "_key")

    def __init__(self, header: str, key: str, *, prefix: str = "") -> None:
        self._headers = {header: f"{prefix}{key}"}
        self._key = key

    async def headers(self) -> Mapping[str, str]:
        return self._headers

    def secrets(self) -> Sequence[str]:
        return (self._key,)


@runtime_checkable
class RequestSigner(Protocol):
    """An ``Auth`` whose headers depend on the request itself (AWS SigV4)."""

    async def headers(self) -> Mapping[str, str]: ...

    def secrets(self) -> Sequence[str]: ...

    async def sign(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Mapping[str, str]:
        """The headers to send: ``headers`` plus the signature over the request."""
        ...
