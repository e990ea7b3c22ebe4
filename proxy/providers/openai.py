"""OpenAI Images API (and any OpenAI-compatible base URL).

API: https://platform.openai.com/docs/api-reference/images/createEdit
Multipart in becomes multipart out, streamed from the temp files; JSON in becomes
OpenAI's JSON edit form (``images: [{image_url|file_id}]``). Deviations: GPT image
models always answer base64, so ``response_format`` is dropped for them when it asks for
``b64_json`` and refused when it asks for ``url``; the client's ``user`` goes as
``safety_identifier`` (OpenAI's replacement for it), and with ``safety_identifier:
derive`` a request without one gets a stable hash of its client key.
Current models (2026-12): gpt-image-2, gpt-image-2.5-flare/-sunburst and
gpt-image-2.6-flare/-sunburst; gpt-image-1*, chatgpt-image-latest and DALL-E are shut down.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import Any, ClassVar, Literal

import msgspec

from proxy import sse
from proxy.errors import InvalidRequest
from proxy.models import EditJob, EditResult
from proxy.providers import _openai_compat as compat
from proxy.providers._call import UpstreamCall, compose, open_reply
from proxy.providers._prepare import Needs, Prepared, prepare
from proxy.providers._results import Outputs
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool, StaticKey
from proxy.upstream import Upstream, UpstreamResponse
from proxy.upstream_reply import UpstreamStream


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="openai"):
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    organization: str | None = None
    project: str | None = None
    # user: the client's `user` goes as `safety_identifier`; derive: and when it sends
    # none, a stable hash of its client key (HMAC-SHA256, 64 hex digits; never the key).
    safety_identifier: Literal["user", "derive"] = "user"
    pool: Pool = Pool()


def _is_gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def normalize(job: EditJob, *, derive: bool = False) -> EditJob:
    """Apply OpenAI's model rules that the proxy can check before sending."""
    if not _is_gpt_image(job.model):
        return job
    job = compat.with_safety_identifier(job, derive=derive)
    if job.response_format is None:
        return job
    if job.response_format == "url":
        raise InvalidRequest(
            f"model '{job.model}' returns base64 images only; use "
            "response_format=b64_json or leave it out",
            param="response_format",
        )
    return msgspec.structs.replace(job, response_format=None)


class OpenAIAdapter:
    name: ClassVar[str] = "openai"
    # OpenAI's JSON form takes file ids; gpt-image models do not fetch remote URLs.
    capabilities: ClassVar[Capabilities] = Capabilities(file_ids=True, streaming=True)
    # A multipart edit's image goes in the client's bytes: sent as it arrives
    # (proxy.forward).
    forwards_uploads: ClassVar[bool] = True

    def __init__(self, config: Config) -> None:
        self._derive = config.safety_identifier == "derive"
        self._headers: dict[str, str] = {}
        if config.organization:
            self._headers["OpenAI-Organization"] = config.organization
        if config.project:
            self._headers["OpenAI-Project"] = config.project

    def auth(self, key: str) -> Auth:
        return StaticKey("Authorization", key, prefix="Bearer ")

    def needs(self, job: EditJob) -> Needs:
        return compat.needs(job)

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall:
        return compat.build(
            normalize(job, derive=self._derive),
            prepared,
            edits_path="/images/edits",
            generations_path="/images/generations",
            headers={**job.extra_headers, **self._headers},
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

    @contextlib.asynccontextmanager
    async def stream(
        self, job: EditJob, upstream: Upstream
    ) -> AsyncIterator[AsyncGenerator[bytes, None]]:
        """The call with ``stream: true``: its event stream as it arrives.

        An upstream that answers in full instead (an "OpenAI-compatible" one that does
        not stream) is turned into the completed events that stand for its result.
        """
        call = self.build(job, await prepare(job, self.needs(job)))
        async with upstream.stream(
            call.method, call.path, headers=call.headers, data=call.body
        ) as reply:
            if not reply.ok:
                raise compat.error_for(upstream.name, await reply.read())
            ctype = reply.headers.get("Content-Type", "").split(";")[0]
            if ctype == "text/event-stream":
                yield reply.chunks()
                return
            result = compat.parse_images(upstream.name, (await reply.read()).body)
            prefix = "image_edit" if job.operation == "edit" else "image_generation"
            events = sse.result_events(msgspec.json.decode(result.body), prefix)
            yield _replay(
                [sse.encode_event(e["type"], msgspec.json.encode(e)) for e in events]
            )


async def _replay(events: list[bytes]) -> AsyncGenerator[bytes, None]:
    for event in events:
        yield event
