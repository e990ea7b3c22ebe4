"""``GET /v3/images/models``: the model names this gateway serves and what each takes.

Names come from configuration (aliases, models an adapter's config names such as Azure
deployments, or an adapter's known models) and otherwise from the price table (the
models known for a provider's type), filtered by ``allowed_models``. Capabilities are
the adapters' own declarations. A priced model's entry also carries ``pricing``, the
price table's rates for estimates (``proxy.listed_prices``).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from proxy.listed_prices import ModelPricing, pricing_of
from proxy.pricing import PriceTable
from proxy.providers.base import Capabilities, ListsModels, capabilities_of
from proxy.routing import Router
from proxy.state import PRICES, ROUTER


class ModelCapabilities(msgspec.Struct, frozen=True):
    edit: bool
    generate: bool
    mask: bool
    max_images: int
    streaming: bool


class ModelEntry(msgspec.Struct, frozen=True):
    id: str
    provider: str
    owned_by: str
    capabilities: ModelCapabilities
    object: str = "model"
    created: int = 0  # OpenAI's Model has it; the gateway has no creation time
    alias_of: str | msgspec.UnsetType = msgspec.UNSET  # present on aliases only
    # Rates for estimates (proxy/listed_prices.py); absent for unpriced models.
    pricing: ModelPricing | msgspec.UnsetType = msgspec.UNSET


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelEntry]
    object: str = "list"


_encode = msgspec.json.Encoder().encode


def _entry(
    model_id: str,
    provider: str,
    caps: Capabilities,
    alias_of: str | msgspec.UnsetType = msgspec.UNSET,
    pricing: ModelPricing | msgspec.UnsetType = msgspec.UNSET,
) -> ModelEntry:
    return ModelEntry(
        id=model_id,
        provider=provider,
        owned_by=provider,
        capabilities=ModelCapabilities(
            edit=caps.edit,
            generate=caps.generate,
            mask=caps.mask and caps.edit,
            max_images=caps.max_images if caps.edit else 0,
            streaming=caps.streaming,
        ),
        alias_of=alias_of,
        pricing=pricing,
    )


def list_models(router: Router, prices: PriceTable) -> ModelList:
    entries: list[ModelEntry] = []
    for name, provider in sorted(router.providers().items()):
        adapter = provider.adapter
        if isinstance(adapter, ListsModels):
            ids = adapter.listed_models()
        else:
            ids = prices.models(adapter.name)
        for model in ids:
            full = f"{name}/{model}"
            if router.allows(full):
                caps = capabilities_of(adapter, model)
                cost = pricing_of(prices, router.resolve(full).price_key)
                entries.append(_entry(full, name, caps, pricing=cost))
    for alias, target in sorted(router.aliases.items()):
        route = router.resolve(alias)
        caps = capabilities_of(route.adapter, route.model)
        cost = pricing_of(prices, route.price_key)
        entries.append(
            _entry(alias, route.provider, caps, alias_of=target, pricing=cost)
        )
    return ModelList(data=entries)


async def images_models(request: web.Request) -> web.Response:
    app = request.app
    body = _encode(list_models(app[ROUTER], app[PRICES]))
    return web.Response(body=body, content_type="application/json")
