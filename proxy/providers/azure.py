"""Azure OpenAI image edits and generations, on either of Azure's two surfaces.

API: https://learn.microsoft.com/azure/ai-foundry/openai/reference (images)
- ``surface: deployments`` (default): ``/openai/deployments/{deployment}/images/edits``
  with ``?api-version=``; the deployment in the path chooses the model.
- ``surface: v1``: ``/openai/v1/images/edits``; the deployment goes in the body's
  ``model``, no api-version.
The wire format is OpenAI's (multipart in → multipart out, JSON in → JSON out) with the
key in an ``api-key`` header. Deviations: ``model`` names a deployment, not a model, so
``deployments`` maps each deployment to the model it serves, for pricing and listing.
For a deployment of a gpt-image model the client's ``user`` goes as
``safety_identifier``, as at OpenAI (``safety_identifier: derive`` as there).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import msgspec

from proxy.models import EditJob, EditResult
from proxy.providers import _inputs
from proxy.providers import _openai_compat as compat
from proxy.providers._call import UpstreamCall, compose, open_reply
from proxy.providers._prepare import Needs, Prepared
from proxy.providers._results import Outputs
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool, StaticKey
from proxy.upstream import Upstream, UpstreamResponse
from proxy.upstream_reply import UpstreamStream


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="azure"):
    # https://{resource}.openai.azure.com (or *.cognitiveservices.azure.com)
    base_url: str
    api_key_env: str = "AZURE_OPENAI_API_KEY"
    surface: Literal["deployments", "v1"] = "deployments"
    api_version: str = "2025-04-01-preview"
    # deployment name -> the model it serves, e.g. {my-images: gpt-image-2}
    deployments: dict[str, str] = msgspec.field(default_factory=dict)
    # As OpenAI's: `user` → `safety_identifier`; derive: a client key's hash when none.
    safety_identifier: Literal["user", "derive"] = "user"
    pool: Pool = Pool()


def path_for(config: Config, deployment: str, operation: str) -> str:
    """The request path (with query) for ``edits`` or ``generations``."""
    if config.surface == "v1":
        return f"/openai/v1/images/{operation}"
    dep = quote(deployment, safe="")
    version = quote(config.api_version, safe="")
    return f"/openai/deployments/{dep}/images/{operation}?api-version={version}"


class AzureAdapter:
    name: ClassVar[str] = "azure"
    capabilities: ClassVar[Capabilities] = Capabilities()
    # A multipart edit's image goes in the client's bytes: sent as it arrives
    # (proxy.forward).
    forwards_uploads: ClassVar[bool] = True

    def __init__(self, config: Config) -> None:
        self._config = config

    def auth(self, key: str) -> Auth:
        return StaticKey("api-key", key)

    def price_model(self, model: str) -> str:
        return self._config.deployments.get(model, model)

    def listed_models(self) -> list[str]:
        return sorted(self._config.deployments)

    def needs(self, job: EditJob) -> Needs:
        return compat.needs(job)

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        _inputs.model_path(job.model, provider=job.provider)
        if self.price_model(job.model).startswith("gpt-image"):
            derive = self._config.safety_identifier == "derive"
            job = compat.with_safety_identifier(job, derive=derive)
        return compat.build(
            job,
            prepared,
            edits_path=path_for(self._config, job.model, "edits"),
            generations_path=path_for(self._config, job.model, "generations"),
            headers=dict(job.extra_headers),
        )

    openai_images = True  # a large reply is parsed in slices (_call._parse)

    def parse(self, provider: str, reply: UpstreamResponse) -> Outputs:
        return compat.parse(provider, reply)

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        return await compose(self, job, upstream)

    def open(
        self, job: EditJob, upstream: Upstream, *, held: int
    ) -> Coroutine[Any, Any, EditResult | UpstreamStream]:
        return open_reply(self, job, upstream, held=held)  # awaited by the caller
