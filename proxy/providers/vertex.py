"""Vertex AI: Gemini image models via ``:generateContent``.

Gemini (``gemini-3.1-flash-image``, ``gemini-3-pro-image``, ...): the Gemini API's request
and reply (``_google``), on ``{base_url}/projects/{project}/locations/{location}/
publishers/google/models/{model}:generateContent``; Google serves them from the
``global`` location (https://aiplatform.googleapis.com), the default here. No mask, no
native ``n`` (the proxy makes n calls). API:
https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference
Imagen (``:predict``) is gone: every Imagen id was shut down on Vertex by 2026-08-17
(docs/catalog-sources.md), and the catalogue answers a request for one with 410
``model_retired`` naming its Gemini replacement before any adapter runs.
Credentials: a service-account key file (its path in ``api_key_env``, by default
``GOOGLE_APPLICATION_CREDENTIALS``) exchanged for OAuth tokens by the proxy, or with
``auth: access_token`` a ready token in ``api_key_env``.
"""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import quote

from proxy.models import EditJob, EditResult
from proxy.providers import _google, _inputs
from proxy.providers._call import UpstreamCall, send
from proxy.providers._gcp_auth import ServiceAccountAuth
from proxy.providers._prepare import Needs, Prepared, prepare, splice
from proxy.providers._results import Outputs, finish
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool, StaticKey
from proxy.upstream import Upstream, UpstreamResponse


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="vertex"):
    project: str
    # Gemini image models are served from `global`; a regional location takes its own
    # host (https://{location}-aiplatform.googleapis.com/v1), kept in step with it.
    location: str = "global"
    base_url: str = "https://aiplatform.googleapis.com/v1"
    api_key_env: str = "GOOGLE_APPLICATION_CREDENTIALS"
    auth: Literal["service_account", "access_token"] = "service_account"
    pool: Pool = Pool()


class VertexAdapter:
    name: ClassVar[str] = "vertex"
    capabilities: ClassVar[Capabilities] = _google.GEMINI_CAPABILITIES

    def __init__(self, config: Config) -> None:
        self._config = config
        self._path = (
            f"/projects/{quote(config.project, safe='')}"
            f"/locations/{quote(config.location, safe='')}/publishers/google/models/"
        )
        self._service_account: ServiceAccountAuth | None = None

    def auth(self, key: str) -> Auth:
        if self._config.auth == "access_token":
            return StaticKey("Authorization", key, prefix="Bearer ")
        # Kept so edit() can refresh the token through the Upstream before each call.
        self._service_account = ServiceAccountAuth(
            key, key_env=self._config.api_key_env
        )
        return self._service_account

    def needs(self, job: EditJob) -> Needs:
        return Needs(base64=True)

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        # Checked before a token is fetched: the id must not climb out of models/.
        model = _inputs.model_path(job.model, provider=job.provider)
        headers = {**job.extra_headers, "Content-Type": "application/json"}
        body = _google.build_body(job, prepared, job.provider)
        return UpstreamCall(
            "POST", f"{self._path}{model}:generateContent", headers, body
        )

    def parse(self, provider: str, reply: UpstreamResponse) -> Outputs:
        """A Gemini ``:generateContent`` reply."""
        if not reply.ok:
            raise _google.error_for(provider, reply)
        return Outputs(*_google.parse_reply(provider, reply.body))

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        prepared = await prepare(job, self.needs(job), splice=True)
        call = splice(self.build(job, prepared), prepared)
        if self._service_account is not None:
            await self._service_account.refresh(upstream)
        outputs = self.parse(upstream.name, await send(upstream, call))
        return await finish(outputs, job=job, upstream=upstream)
