"""The adapter interface and what every provider shares: config base, pool settings,
authentication, and small pure helpers.

An adapter turns one ``EditJob`` into one ``EditResult`` through the ``Upstream`` it is
given; it never creates sessions, reads the environment or touches metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, ClassVar, Protocol

import msgspec

if TYPE_CHECKING:
    from proxy.models import EditJob, EditResult
    from proxy.upstream import Upstream

Seconds = Annotated[float, msgspec.Meta(gt=0)]


class ConfigBase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class Pool(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """Connection pool and timeouts for one provider's session."""

    limit: Annotated[int, msgspec.Meta(ge=1)] = 100
    limit_per_host: Annotated[int, msgspec.Meta(ge=0)] = 0
    keepalive_timeout_s: Seconds = 30.0
    dns_cache_ttl_s: Annotated[int, msgspec.Meta(ge=0)] = 300
    connect_timeout_s: Seconds = 10.0
    # Image edits can take minutes at high quality.
    total_timeout_s: Seconds = 300.0
    read_timeout_s: Seconds = 300.0


class Auth(Protocol):
    """Supplies the credential headers for one upstream request."""

    async def headers(self) -> Mapping[str, str]: ...


class StaticKey:
    """A fixed key sent in one header, e.g. ``Authorization: Bearer <key>``."""

    __slots__ = ("_headers",)

    def __init__(self, header: str, key: str, *, prefix: str = "") -> None:
        self._headers = {header: f"{prefix}{key}"}

    async def headers(self) -> Mapping[str, str]:
        return self._headers


class ProviderAdapter(Protocol):
    """Turns one validated EditJob into one EditResult via one upstream provider."""

    name: ClassVar[str]

    def auth(self, key: str) -> Auth:
        """The credential source for this provider, given the configured key."""
        ...

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        """Return a complete result or raise an UpstreamError subclass."""
        ...
