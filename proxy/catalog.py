"""``GET /v3/images/models``: the model names this gateway serves and what each takes.

Names come from configuration (aliases, models an adapter's config names such as Azure
deployments, or an adapter's known models) and otherwise from the price table (the
models known for a provider's type), filtered by ``allowed_models``. Capabilities are
the adapters' own declarations. A priced model's entry also carries ``pricing``, the
price table's rates for estimates (``proxy.listed_prices``); a catalogued one carries
``price`` (the catalogue's row in the provider's billing shape, its source and date)
and ``lifecycle`` (status today, deprecation and shutdown dates, replacement).
"""

from __future__ import annotations

import datetime as dt

import msgspec
from aiohttp import web

from proxy.catalogue.load import today
from proxy.catalogue.schema import Price, Status, Verdict
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


class ModelLifecycle(msgspec.Struct, frozen=True, omit_defaults=True):
    status: Status
    released: dt.date | None = None
    deprecated: dt.date | None = None
    shutdown: dt.date | None = None
    replacement: list[str] | None = None


class CataloguePrice(msgspec.Struct, frozen=True, omit_defaults=True):
    """The catalogue's price row in the shape the provider bills, and its source."""

    price: Price | None
    verdict: Verdict | None = None
    note: str | None = None
    source: list[str] = []
    checked: dt.date | None = None


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
    # The catalogue row (proxy/catalog.yaml): absent for models it does not know.
    price: CataloguePrice | msgspec.UnsetType = msgspec.UNSET
    lifecycle: ModelLifecycle | msgspec.UnsetType = msgspec.UNSET


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelEntry]
    object: str = "list"


_encode = msgspec.json.Encoder().encode


def _catalogued(
    prices: PriceTable, key: str
) -> tuple[CataloguePrice | msgspec.UnsetType, ModelLifecycle | msgspec.UnsetType]:
    cat = prices.catalogue
    row = None if cat is None else cat.get(key)
    if cat is None or row is None:
        return msgspec.UNSET, msgspec.UNSET
    life = cat.lifecycle(key)
    price = CataloguePrice(
        row.price, row.price_verdict, row.price_note, row.source, row.checked
    )
    lifecycle = ModelLifecycle(
        life.status(today()),
        life.released,
        life.deprecated,
        life.shutdown,
        life.replacements() or None,
    )
    return price, lifecycle


def _entry(
    model_id: str,
    provider: str,
    caps: Capabilities,
    prices: PriceTable,
    key: str,
    alias_of: str | msgspec.UnsetType = msgspec.UNSET,
) -> ModelEntry:
    price, lifecycle = _catalogued(prices, key)
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
        pricing=pricing_of(prices, key),
        price=price,
        lifecycle=lifecycle,
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
                key = router.resolve(full).price_key
                entries.append(_entry(full, name, caps, prices, key))
    for alias, target in sorted(router.aliases.items()):
        route = router.resolve(alias)
        caps = capabilities_of(route.adapter, route.model)
        entries.append(
            _entry(alias, route.provider, caps, prices, route.price_key, target)
        )
    return ModelList(data=entries)


async def images_models(request: web.Request) -> web.Response:
    app = request.app
    body = _encode(list_models(app[ROUTER], app[PRICES]))
    return web.Response(body=body, content_type="application/json")
