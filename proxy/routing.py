"""Model name → (provider adapter, upstream, provider model id).

``model`` is ``"<provider>/<model id>"`` where ``<provider>`` is a configured provider
name; the rest, which may itself contain slashes, is the provider's model id. A
configured alias (``models: {house-style: openai/gpt-image-2}``) stands for its target,
and ``allowed_models`` patterns (shell-style, over ``<provider>/<model id>``) restrict
what is served; an alias is always served, since the operator named it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import NamedTuple

from proxy.errors import UnknownModel
from proxy.providers.base import PricedAs, ProviderAdapter
from proxy.upstream import Upstream

_KEPT_ROUTES = 256


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
    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        aliases: Mapping[str, str] | None = None,
        allowed: Sequence[str] | None = None,
    ) -> None:
        self._providers = dict(providers)
        # Decided once: a runtime Protocol check per request is measurable CPU.
        self._priced: dict[str, PricedAs] = {
            name: p.adapter
            for name, p in providers.items()
            if isinstance(p.adapter, PricedAs)
        }
        self.aliases = dict(aliases or {})
        self.allowed = None if allowed is None else tuple(allowed)
        # Routes resolved before, by the name the client sent: a request's model is
        # resolved two or three times, the same few names each request. Bounded (the
        # name is the client's); a name refused is never kept.
        self._resolved: dict[str, Route] = {}

    @property
    def names(self) -> list[str]:
        return sorted(self._providers)

    def providers(self) -> dict[str, Provider]:
        return dict(self._providers)

    def allows(self, model: str) -> bool:
        """Whether ``<provider>/<model id>`` passes the ``allowed_models`` patterns."""
        if self.allowed is None:
            return True
        # A loop: a genexpr made a cell of ``model`` on every call.
        for pattern in self.allowed:  # noqa: SIM110
            if fnmatchcase(model, pattern):
                return True
        return False

    def _not_served(self, model: str) -> UnknownModel:
        assert self.allowed is not None
        served = ", ".join([*self.allowed, *sorted(self.aliases)]) or "none"
        return UnknownModel(
            f"model '{model}' is not served by this gateway; allowed models: {served}"
        )

    def resolve(self, model: str) -> Route:
        route = self._resolved.get(model)
        if route is None:
            route = self._resolve(model)
            if len(self._resolved) < _KEPT_ROUTES:
                self._resolved[model] = route
        return route

    def _resolve(self, model: str) -> Route:
        target = self.aliases.get(model)
        if target is None:
            target = model
            if not self.allows(model):
                raise self._not_served(model)
        name, _, model_id = target.partition("/")
        provider = self._providers.get(name)
        if provider is None or not model_id:
            configured = ", ".join(self.names) or "none"
            aliases = ", ".join(sorted(self.aliases))
            known = f"; or an alias ({aliases})" if aliases else ""
            raise UnknownModel(
                f"unknown provider in model '{model}': use '<provider>/<model>' with a "
                f"configured provider ({configured}){known}"
            )
        adapter = provider.adapter
        priced_as = self._priced.get(name)
        priced = priced_as.price_model(model_id) if priced_as is not None else None
        return Route(
            name,
            model_id,
            adapter,
            provider.upstream,
            f"{adapter.name}/{priced or model_id}",
        )
