"""``GET /v3/images/models``: the model names this gateway serves and what each takes.

Names come from configuration (aliases, models an adapter's config names such as Azure
deployments) and from the price table (the models known for a provider's type),
filtered by ``allowed_models``. Capabilities are the adapters' own declarations.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from proxy.pricing import PriceTable
from proxy.providers.base import Capabilities, ListsModels, capabilities_of
from proxy.routing import Router
from proxy.state import GATEWAY

_encode = msgspec.json.encode


def _entry(model_id: str, provider: str, caps: Capabilities) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "owned_by": provider,
        "provider": provider,
        "capabilities": {
            "edit": caps.edit,
            "generate": caps.generate,
            "mask": caps.mask and caps.edit,
            "max_images": caps.max_images if caps.edit else 0,
        },
    }


def list_models(router: Router, prices: PriceTable) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for name, provider in sorted(router.providers().items()):
        adapter = provider.adapter
        if isinstance(adapter, ListsModels):
            ids = adapter.listed_models()
        else:
            ids = prices.models(adapter.name)
        for model in ids:
            full = f"{name}/{model}"
            if router.allows(full):
                entries.append(_entry(full, name, capabilities_of(adapter, model)))
    for alias, target in sorted(router.aliases.items()):
        route = router.resolve(alias)
        entry = _entry(
            alias, route.provider, capabilities_of(route.adapter, route.model)
        )
        entry["alias_of"] = target
        entries.append(entry)
    return entries


async def images_models(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    body = {"object": "list", "data": list_models(gateway.router, gateway.prices)}
    return web.Response(body=_encode(body), content_type="application/json")
