"""Fallback policy: which failures move a job down its model's fallback list, which
routes of the list may be tried, and the one error when all of them failed. The
pipeline (``proxy.dispatch``) walks the list.

``fallbacks: {"openai/gpt-image-2": ["backup/gpt-image-2", ...]}`` is tried in order
when a provider fails in a way another provider may not: 5xx or unreachable, timeouts,
429, an open circuit, or no key configured. Input errors (400s) are the client's and
end the chain. A fallback the client's key may not use, or that cannot take the job's
inputs, is skipped and named among the causes. When every provider fails, one error
lists each provider's cause.
"""

from __future__ import annotations

from collections.abc import Iterator

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
from proxy.routing import Route, Router

FALLBACK_ON = (
    UpstreamUnavailable,
    UpstreamTimeout,
    UpstreamRateLimited,
    ProviderNotConfigured,
)


def candidates(
    chain: list[str],
    *,
    router: Router,
    keys: KeyRing,
    key: str | None,
    causes: list[tuple[str, ProxyError]],
) -> Iterator[Route]:
    """The chain's routes to try, in order; one that cannot be tried is skipped and
    named among ``causes``."""
    for model in chain:
        try:
            nxt = router.resolve(model)  # allowed_models applies to fallbacks too
        except ProxyError as exc:
            causes.append((model.partition("/")[0], exc))
            continue
        if key is not None and not keys.allows(key, model):
            causes.append((nxt.provider, InvalidRequest("not allowed for this key")))
            continue
        yield nxt


def all_failed(
    route: Route, causes: list[tuple[str, ProxyError]]
) -> AllProvidersFailed:
    """One error for a chain that failed everywhere, listing each provider's cause."""
    return _all_failed(f"{route.provider}/{route.model}", route.provider, causes)


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
