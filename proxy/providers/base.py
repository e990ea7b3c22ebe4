"""The adapter interface and what every provider shares: pool settings, capabilities,
the optional adapter protocols, and small pure helpers. Credentials live in the leaf
``proxy.credentials`` and the config base in ``proxy.config_base``.

An adapter turns one ``EditJob`` into one ``EditResult`` through the ``Upstream`` it is
given; it never creates sessions, reads the environment or touches metrics.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol, runtime_checkable

import msgspec

# Re-exported: adapters take their config base and credentials from here.
from proxy.config_base import ConfigBase as ConfigBase
from proxy.config_base import Seconds as Seconds
from proxy.credentials import Auth as Auth
from proxy.credentials import RequestSigner as RequestSigner
from proxy.credentials import StaticKey as StaticKey

# Re-exported: what a provider accepts is a Core type, so intake can check it without
# knowing any provider.
from proxy.models import Capabilities as Capabilities

if TYPE_CHECKING:
    from proxy.models import EditJob, EditResult
    from proxy.upstream import Upstream
    from proxy.upstream_reply import UpstreamStream


class Pool(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """Connection pool and timeouts for one provider's session."""

    # Connections open at once; null: backpressure.max_inflight, so the pool never
    # holds back an edit the gateway admitted (a fixed 100 ran 250 held edits 100 at
    # a time: issue 19). A number caps what this provider is sent at once.
    limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    limit_per_host: Annotated[int, msgspec.Meta(ge=0)] = 0
    keepalive_timeout_s: Seconds = 30.0
    dns_cache_ttl_s: Annotated[int, msgspec.Meta(ge=0)] = 300
    connect_timeout_s: Seconds = 10.0
    # Image edits can take minutes at high quality.
    total_timeout_s: Seconds = 300.0
    read_timeout_s: Seconds = 300.0


class ProviderAdapter(Protocol):
    """Turns one validated EditJob into one EditResult via one upstream provider."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def auth(self, key: str) -> Auth:
        """The credential source for this provider, given the configured key."""
        ...

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        """Return a complete result or raise an UpstreamError subclass."""
        ...


@runtime_checkable
class StreamingAdapter(Protocol):
    """An adapter whose provider streams server-sent events (``streaming=True``)."""

    def stream(
        self, job: EditJob, upstream: Upstream
    ) -> AbstractAsyncContextManager[AsyncGenerator[bytes, None]]:
        """Open the provider's event stream; raise an UpstreamError before yielding
        if the provider refused. Yields the raw body as it arrives."""
        ...


@runtime_checkable
class RelayingAdapter(Protocol):
    """An adapter whose 2xx reply is OpenAI's JSON as it is, relayed as it arrives
    (``proxy.passthrough``)."""

    def open(
        self, job: EditJob, upstream: Upstream, *, held: int
    ) -> Coroutine[Any, Any, EditResult | UpstreamStream]:
        """The call made (to await): its result if the reply is at most ``held``
        bytes (or not 2xx: raised), else the reply unread, for the caller to relay
        and close."""
        ...


@runtime_checkable
class ChainAuth(Protocol):
    """An adapter whose credentials come from a chain (environment, files, instance
    metadata) rather than from one key in ``api_key_env``."""

    def chain_auth(self, environ: Mapping[str, str]) -> Auth: ...


@runtime_checkable
class KeyHosts(Protocol):
    """An adapter whose provider names URLs that need the key on hosts other than
    ``base_url``'s (BFL's ``polling_url``): ``scheme://host[:port]`` patterns. The
    ``Upstream`` sends credentials to no other absolute URL."""

    def key_hosts(self) -> list[str]: ...


@runtime_checkable
class PricedAs(Protocol):
    """An adapter whose model ids are not the pricing table's (Azure deployments)."""

    def price_model(self, model: str) -> str: ...


@runtime_checkable
class ListsModels(Protocol):
    """An adapter whose configuration names its models (listed by ``/images/models``)."""

    def listed_models(self) -> list[str]: ...


def resolve_auth(
    adapter: ProviderAdapter, key: str | None, environ: Mapping[str, str]
) -> Auth | None:
    """The adapter's credentials: its key, or its credential chain; None if neither."""
    if isinstance(adapter, ChainAuth):
        return adapter.chain_auth(environ)
    return adapter.auth(key) if key else None


@runtime_checkable
class PerModelCapabilities(Protocol):
    """An adapter whose models differ in what they accept (FLUX Kontext vs Fill)."""

    def model_capabilities(self, model: str) -> Capabilities: ...


def capabilities_of(adapter: ProviderAdapter, model: str) -> Capabilities:
    # getattr, not isinstance(PerModelCapabilities): a runtime Protocol check inspects
    # every member on each call, a few % of a small edit's CPU on Python 3.11.
    per_model = getattr(adapter, "model_capabilities", None)
    if per_model is None:
        return adapter.capabilities
    caps: Capabilities = per_model(model)
    return caps
