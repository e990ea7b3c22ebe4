"""Run a job on its model's provider, then down the model's fallback list.

``fallbacks: {"openai/gpt-image-2": ["backup/gpt-image-2", ...]}`` is tried in order
when a provider fails in a way another provider may not: 5xx or unreachable, timeouts,
429, an open circuit, or no key configured. Input errors (400s) are the client's and
end the chain. A fallback the client's key may not use, or that cannot take the job's
inputs, is skipped and named among the causes. When every provider fails, one error
lists each provider's cause.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from proxy.client_keys import KeyRing
from proxy.errors import (
    AllProvidersFailed,
    InvalidRequest,
    ProviderNotConfigured,
    ProxyError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.metrics import Metrics
from proxy.models import EditJob, EditResult
from proxy.routing import Route, Router

FALLBACK_ON = (
    UpstreamUnavailable,
    UpstreamTimeout,
    UpstreamRateLimited,
    ProviderNotConfigured,
)


Call = Callable[[Route, EditJob], Awaitable[EditResult]]


async def run(
    route: Route,
    job: EditJob,
    call: Call,
    *,
    chain: list[str],
    router: Router,
    keys: KeyRing,
    key: str | None,
    metrics: Metrics,
) -> tuple[Route, EditResult]:
    """The route that answered and its result; the primary's own error without chain.

    ``call`` checks the job against a route's capabilities and runs it there.
    """
    try:
        return route, await call(route, job)
    except FALLBACK_ON as exc:
        if not chain:
            raise
        causes: list[tuple[str, ProxyError]] = [(route.provider, exc)]
    failed = route.provider
    for model in chain:
        try:
            nxt = router.resolve(model)  # allowed_models applies to fallbacks too
        except ProxyError as exc:
            causes.append((model.partition("/")[0], exc))
            continue
        if key is not None and not keys.allows(key, model):
            causes.append((nxt.provider, InvalidRequest("not allowed for this key")))
            continue
        metrics.fallbacks.labels(failed).inc()
        moved = msgspec.structs.replace(job, provider=nxt.provider, model=nxt.model)
        try:
            return nxt, await call(nxt, moved)
        except (*FALLBACK_ON, InvalidRequest) as exc:
            causes.append((nxt.provider, exc))
            failed = nxt.provider
    raise _all_failed(f"{route.provider}/{route.model}", route.provider, causes)


def _all_failed(
    model: str, primary: str, causes: list[tuple[str, ProxyError]]
) -> AllProvidersFailed:
    listed = "; ".join(f"{name}: {exc.message}" for name, exc in causes)
    kinds = {type(exc) for _, exc in causes}
    status, headers = 502, {}
    if kinds == {UpstreamRateLimited}:
        status = 429
        waits = [exc.headers.get("Retry-After", "") for _, exc in causes]
        if all(w.isdigit() for w in waits):
            headers["Retry-After"] = min(waits, key=int)
    elif kinds == {UpstreamTimeout}:
        status = 504
    return AllProvidersFailed(
        f"every provider for model '{model}' failed: {listed}",
        provider=primary,
        status=status,
        headers=headers,
    )
