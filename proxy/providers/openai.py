"""OpenAI Images API (and any OpenAI-compatible base URL).

API: https://platform.openai.com/docs/api-reference/images/createEdit
Multipart in becomes multipart out, streamed from the temp files; JSON in becomes
OpenAI's JSON edit form (``images: [{image_url|file_id}]``). Deviations: GPT image
models always answer base64, so ``response_format`` is dropped for them when it asks for
``b64_json`` and refused when it asks for ``url``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any, ClassVar

import msgspec

from proxy import sse
from proxy.errors import InvalidRequest
from proxy.models import EditJob, EditResult
from proxy.providers import _openai_compat as compat
from proxy.providers.base import Auth, Capabilities, ConfigBase, Pool, StaticKey
from proxy.upstream import Upstream

_JSON = {"Content-Type": "application/json"}
_SSE = "text/event-stream"


class Config(ConfigBase, frozen=True, forbid_unknown_fields=True, tag="openai"):
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str = "OPENAI_API_KEY"
    organization: str | None = None
    project: str | None = None
    pool: Pool = Pool()


def _is_gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def normalize(job: EditJob) -> EditJob:
    """Apply OpenAI's model rules that the proxy can check before sending."""
    if job.response_format is None or not _is_gpt_image(job.model):
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

    def __init__(self, config: Config) -> None:
        self._headers: dict[str, str] = {}
        if config.organization:
            self._headers["OpenAI-Organization"] = config.organization
        if config.project:
            self._headers["OpenAI-Project"] = config.project

    def auth(self, key: str) -> Auth:
        return StaticKey("Authorization", key, prefix="Bearer ")

    @contextlib.asynccontextmanager
    async def _request(self, job: EditJob) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The path and body arguments of one request (files closed on exit)."""
        job = normalize(job)
        headers = {**job.extra_headers, **self._headers}
        if job.operation == "generate":
            path = "/images/generations"
        else:
            path = "/images/edits"
            if job.source == "multipart":
                async with compat.multipart_form(job, model=job.model) as form:
                    yield path, {"data": form, "headers": headers}
                return
        body = await compat.json_body(job, model=job.model)
        yield path, {"data": body, "headers": {**headers, **_JSON}}

    async def edit(self, job: EditJob, upstream: Upstream) -> EditResult:
        async with self._request(job) as (path, kwargs):
            resp = await upstream.post(path, **kwargs)
        if not resp.ok:
            raise compat.error_for(upstream.name, resp)
        return compat.parse_images(upstream.name, resp.body)

    @contextlib.asynccontextmanager
    async def stream(
        self, job: EditJob, upstream: Upstream
    ) -> AsyncIterator[AsyncGenerator[bytes, None]]:
        async with (
            self._request(job) as (path, kwargs),
            upstream.stream("POST", path, **kwargs) as reply,
        ):
            if not reply.ok:
                raise compat.error_for(upstream.name, await reply.read())
            if reply.headers.get("Content-Type", "").split(";")[0] == _SSE:
                yield reply.chunks()
                return
            # An OpenAI-compatible upstream that does not stream answered in full.
            result = compat.parse_images(upstream.name, (await reply.read()).body)
            prefix = "image_edit" if job.operation == "edit" else "image_generation"
            body = msgspec.json.decode(result.body)
            yield _replay(
                sse.encode_event(e["type"], msgspec.json.encode(e))
                for e in sse.result_events(body, prefix)
            )


async def _replay(events: Iterable[bytes]) -> AsyncGenerator[bytes, None]:
    for event in events:
        yield event
