"""The provider registry: the tagged union of provider configs and ``build_adapter``.

Explicit and exhaustive (imported by ``proxy.config`` and ``proxy.app`` only): adding a provider means adding its module, its ``Config`` to
the union, and its arm to the ``match``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, assert_never

from proxy.providers import (
    amazon,
    azure,
    bfl,
    google,
    openai,
    replicate,
    stabilityai,
    vertex,
    xai,
)

if TYPE_CHECKING:
    from proxy.providers.base import ProviderAdapter

ProviderConfig = (
    openai.Config
    | google.Config
    | vertex.Config
    | stabilityai.Config
    | azure.Config
    | xai.Config
    | bfl.Config
    | replicate.Config
    | amazon.Config
)


def build_adapter(config: ProviderConfig) -> ProviderAdapter:
    match config:
        case openai.Config():
            return openai.OpenAIAdapter(config)
        case google.Config():
            return google.GoogleAdapter(config)
        case vertex.Config():
            return vertex.VertexAdapter(config)
        case stabilityai.Config():
            return stabilityai.StabilityAdapter(config)
        case azure.Config():
            return azure.AzureAdapter(config)
        case xai.Config():
            return xai.XAIAdapter(config)
        case bfl.Config():
            return bfl.BFLAdapter(config)
        case replicate.Config():
            return replicate.ReplicateAdapter(config)
        case amazon.Config():
            return amazon.AmazonAdapter(config)
        case _:
            assert_never(config)
