"""``Router.resolve`` keeps what it resolved, by the name the client sent: bounded, and
a refused name is refused again (never kept)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from proxy import routing
from proxy.errors import UnknownModel
from proxy.routing import Provider, Router


class _Adapter:
    name = "openai"


def _router(allowed: list[str] | None = None) -> Router:
    provider = Provider(cast(Any, _Adapter()), cast(Any, None))
    return Router({"openai": provider}, aliases={"fast": "openai/gpt-image-2"},
                  allowed=allowed)  # fmt: skip


def test_a_name_resolves_to_the_same_route_each_time() -> None:
    router = _router()
    first = router.resolve("fast")
    assert (first.provider, first.model) == ("openai", "gpt-image-2")
    assert first.price_key == "openai/gpt-image-2"
    assert router.resolve("fast") is first
    assert router.resolve("openai/gpt-image-2") == first


def test_a_refused_name_is_refused_every_time() -> None:
    router = _router(allowed=["openai/gpt-image-2"])
    for _ in range(2):
        with pytest.raises(UnknownModel):
            router.resolve("openai/other")
        with pytest.raises(UnknownModel):
            router.resolve("nobody/model")


def test_what_is_kept_is_bounded() -> None:
    router = _router()
    for i in range(routing._KEPT_ROUTES + 100):
        assert router.resolve(f"openai/model-{i}").model == f"model-{i}"
    assert len(router._resolved) == routing._KEPT_ROUTES
    # Past the bound a name still resolves, each time anew.
    late = f"openai/model-{routing._KEPT_ROUTES + 50}"
    assert router.resolve(late) == router.resolve(late)
