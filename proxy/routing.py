"""Model name → (provider adapter, upstream, provider model id).

``model`` is ``"<provider>/<model id>"`` where ``<provider>`` is a configured provider
name; the rest, which may itself contain slashes, is the provider's model id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from proxy.errors import UnknownModel
from proxy.providers.base import ProviderAdapter
from proxy.upstream import Upstream


class Route(NamedTuple):
    provider: str
    model: str
    adapter: ProviderAdapter
    upstream: Upstream
    price_key: str  # "<provider type>/<model id>", the pricing table's key


class Provider(NamedTuple):
    adapter: ProviderAdapter
    upstream: Upstream


class Router:
    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = dict(providers)

    @property
    def names(self) -> list[str]:
        return sorted(self._providers)

    def resolve(self, model: str) -> Route:
        name, _, model_id = model.partition("/")
        provider = self._providers.get(name)
        if provider is None or not model_id:
            configured = ", ".join(self.names) or "none"
            raise UnknownModel(
                f"unknown provider in model '{model}': use '<provider>/<model>' with a "
                f"configured provider ({configured})"
            )
        return Route(
            name,
            model_id,
            provider.adapter,
            provider.upstream,
            f"{provider.adapter.name}/{model_id}",
        )
