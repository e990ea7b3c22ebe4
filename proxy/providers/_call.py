"""The shape every adapter shares: prepare → build → send → parse → finish.

``build(job, prepared) -> UpstreamCall`` and ``parse(provider, reply) -> Outputs`` are
synchronous and pure (unit-tested without servers); ``prepare`` (file reads, base64,
mask conversion), ``send`` and ``finish`` (URL downloads) are the I/O around them.
Polling providers compose the same steps with ``_polling.poll`` in between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import msgspec

from proxy.formwriter import Form, Spliced
from proxy.providers import _slim
from proxy.providers._prepare import NO_NEEDS, NOTHING, Needs, Prepared, prepare, splice
from proxy.providers._results import Outputs, finish
from proxy.upstream_reply import UpstreamResponse, UpstreamStream

if TYPE_CHECKING:
    from proxy.models import EditJob, EditResult
    from proxy.upstream import Upstream


class UpstreamCall(NamedTuple):
    """One request to a provider, described, not sent: a path under ``base_url`` (or
    an absolute URL on the provider's key hosts), its headers and body."""

    method: str
    path: str
    headers: Mapping[str, str] = {}
    # JSON bytes (``Spliced`` around large images' base64), or a multipart form that
    # streams images from their temp files.
    body: bytes | Spliced | Form | None = None


class Translator(Protocol):
    """An adapter whose one call is a pure build and a pure parse."""

    def needs(self, job: EditJob) -> Needs: ...

    def build(self, job: EditJob, prepared: Prepared) -> UpstreamCall: ...

    def parse(self, provider: str, reply: UpstreamResponse) -> Outputs: ...


async def send(upstream: Upstream, call: UpstreamCall) -> UpstreamResponse:
    if call.body is None:
        return await upstream.request(call.method, call.path, headers=call.headers)
    return await upstream.request(
        call.method, call.path, headers=call.headers, data=call.body
    )


async def open_reply(
    adapter: Translator, job: EditJob, upstream: Upstream, *, held: int
) -> EditResult | UpstreamStream:
    """``compose`` for a provider whose 2xx reply is relayed as it is: a reply longer
    than ``held`` bytes is handed back unread (``proxy.passthrough``)."""
    needs = adapter.needs(job)
    # Nothing to prepare (the usual OpenAI edit): no coroutine for it.
    prepared = NOTHING if needs == NO_NEEDS else await prepare(job, needs, splice=True)
    call = splice(adapter.build(job, prepared), prepared)
    got = await upstream.open(call.method, call.path, held=held,
                              headers=call.headers, data=call.body)  # fmt: skip
    if isinstance(got, UpstreamStream):
        try:
            whole = await got.head(held)  # a short unsized reply is answered whole
        except BaseException:
            await got.close()
            raise
        if whole is None:
            return got
        await got.close()
        got = whole
    if len(got.body) > _slim.LARGE:
        outputs = await _parse_large(adapter, upstream.name, got)
    else:
        outputs = adapter.parse(upstream.name, got)
    return await finish(outputs, job=job, upstream=upstream)


async def compose(
    adapter: Translator,
    job: EditJob,
    upstream: Upstream,
    *,
    hosts: Sequence[str] = (),
) -> EditResult:
    """One provider call end to end: what most adapters' ``edit`` is."""
    needs = adapter.needs(job)
    # Nothing to prepare (the usual OpenAI edit): no coroutine for it.
    prepared = NOTHING if needs == NO_NEEDS else await prepare(job, needs, splice=True)
    reply = await send(upstream, splice(adapter.build(job, prepared), prepared))
    if len(reply.body) > _slim.LARGE:
        outputs = await _parse_large(adapter, upstream.name, reply)
    else:
        outputs = adapter.parse(upstream.name, reply)
    return await finish(outputs, job=job, upstream=upstream, hosts=hosts)


async def _parse_large(
    adapter: Translator, provider: str, reply: UpstreamResponse
) -> Outputs:
    """``adapter.parse``; a large OpenAI images reply (``openai_images`` adapters)
    parsed from its slim copy (``_slim``), so that no step decodes all of it."""
    if not reply.ok or not getattr(adapter, "openai_images", False):
        return adapter.parse(provider, reply)
    slim = await _slim.slimmed(reply.body)
    if slim is None:
        return adapter.parse(provider, reply)
    outputs = adapter.parse(
        provider, UpstreamResponse(reply.status, reply.headers, slim)
    )
    got = outputs.passthrough
    if got is None or got.body is not slim:
        return adapter.parse(provider, reply)  # re-encoded (an upstream's cost): whole
    return outputs._replace(passthrough=msgspec.structs.replace(got, body=reply.body))
