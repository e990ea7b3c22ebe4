"""Model lifecycle on the request path, from the catalogue's dates.

Past its ``shutdown`` date a model is answered at once with 410 ``model_retired``
naming the replacement, before any upstream call; or, with config ``lifecycle:
remap``, sent to its replacement, which the ``Imagegate-Model-Remapped`` header says.
Before shutdown, a deprecated model's answers carry ``Deprecation`` (RFC 9745, a
structured-field date ``@<unix seconds>``) and ``Sunset`` (RFC 8594, an HTTP-date),
and ``imagegate_deprecated_model_requests_total`` counts its requests (label values
are catalogue keys only: bounded).
"""

from __future__ import annotations

import calendar
import datetime as dt
from email.utils import formatdate
from fnmatch import fnmatchcase
from typing import Literal

from proxy.catalogue.load import Catalogue, today
from proxy.catalogue.schema import Lifecycle
from proxy.config import Config
from proxy.context import RequestContext
from proxy.errors import ModelRetired
from proxy.metrics import Metrics
from proxy.routing import Route

REMAPPED = "Imagegate-Model-Remapped"


def _seconds(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


def deprecation_headers(
    deprecated: dt.date | None, shutdown: dt.date | None
) -> dict[str, str]:
    headers = {}
    if deprecated is not None:
        headers["Deprecation"] = f"@{_seconds(deprecated)}"
    if shutdown is not None:
        headers["Sunset"] = formatdate(_seconds(shutdown), usegmt=True)
    return headers


def _remappable(route: Route) -> bool:
    # Azure routes a deployment name, not the model id: nothing to rewrite.
    return route.price_key == f"{route.adapter.name}/{route.model}"


def apply(
    route: Route,
    catalogue: Catalogue | None,
    *,
    mode: Literal["retire", "remap"],
    ctx: RequestContext,
    metrics: Metrics,
    on: dt.date | None = None,
) -> Route:
    """The route to call: ``route``, or its replacement when remapped; raises
    ``ModelRetired`` for a retired model. Sets the answer's lifecycle headers."""
    if catalogue is None or route.price_key not in catalogue:
        return route
    day = on or today()
    life = catalogue.lifecycle(route.price_key)
    status = life.status(day)
    if status == "deprecated":
        metrics.deprecated_requests.labels(route.price_key).inc()
        ctx.headers.update(deprecation_headers(life.deprecated, life.shutdown))
        return route
    if status != "shutdown":
        return route
    return _shut_down(route, catalogue, life, day, mode=mode, ctx=ctx, metrics=metrics)


def _shut_down(
    route: Route,
    catalogue: Catalogue,
    life: Lifecycle,
    day: dt.date,
    *,
    mode: Literal["retire", "remap"],
    ctx: RequestContext,
    metrics: Metrics,
) -> Route:
    # Apart from ``apply``: its comprehensions' cells are made only for a shut model.
    ptype = route.adapter.name
    live = [
        r for r in life.replacements()
        if catalogue.status(f"{ptype}/{r}", day) != "shutdown"
    ]  # fmt: skip
    if mode == "remap" and live and _remappable(route):
        metrics.deprecated_requests.labels(route.price_key).inc()
        new = live[0]
        ctx.headers[REMAPPED] = (
            f"{route.provider}/{route.model}; to={route.provider}/{new}"
        )
        return Route(
            route.provider, new, route.adapter, route.upstream, f"{ptype}/{new}"
        )
    named = life.replacements()
    use = (
        f"; use {' or '.join(f'{route.provider}/{r}' for r in named)}" if named else ""
    )
    raise ModelRetired(
        f"model '{route.provider}/{route.model}' was shut down by its provider on "
        f"{life.shutdown}{use}"
    )


def startup_warnings(
    config: Config, catalogue: Catalogue, on: dt.date | None = None
) -> list[str]:
    """Sentences for the start-up log: aliases, fallback chains and allowed patterns
    that point only at models past their shutdown date."""
    day = on or today()
    types = {name: cfg.__struct_config__.tag for name, cfg in config.providers.items()}

    def key(model: str) -> str | None:
        name, _, model_id = model.partition("/")
        kind = types.get(name)
        return None if kind is None or kind == "azure" else f"{kind}/{model_id}"

    def retired(model: str) -> bool:
        k = key(model)
        return (
            k is not None and k in catalogue and catalogue.status(k, day) == "shutdown"
        )

    out = []
    for alias, target in sorted(config.models.items()):
        if retired(target):
            out.append(
                f"models.{alias}: '{target}' is retired ({_when(catalogue, key(target))})"
            )
    for model, chain in sorted(config.fallbacks.items()):
        if all(retired(m) for m in [model, *chain]):
            out.append(f"fallbacks.{model}: every model of the chain is retired")
    known = [
        f"{name}/{k.split('/', 1)[1]}"
        for name, kind in types.items()
        for k, _ in catalogue.items()
        if k.startswith(f"{kind}/") and kind != "azure"
    ]
    for pattern in config.allowed_models or ():
        matched = [m for m in known if fnmatchcase(m, pattern)]
        if matched and all(retired(m) for m in matched):
            out.append(f"allowed_models: '{pattern}' matches only retired models")
    return out


def _when(catalogue: Catalogue, key: str | None) -> str:
    assert key is not None
    life = catalogue.lifecycle(key)
    named = life.replacements()
    use = f"; use {' or '.join(named)}" if named else ""
    return f"shut down {life.shutdown}{use}"
