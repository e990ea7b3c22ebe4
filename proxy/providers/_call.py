"""The shape every adapter shares: prepare → build → send → parse → finish.

``build(job, prepared) -> UpstreamCall`` and ``parse(provider, reply) -> Outputs`` are
synchronous and pure (unit-tested without servers); ``prepare`` (file reads, base64,
mask conversion), ``send`` and ``finish`` (URL downloads) are the I/O around them.
Polling providers compose the same steps with ``_polling.poll`` in between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from proxy.formwriter import Form
from proxy.providers._prepare import Needs, Prepared, prepare
from proxy.providers._results import Outputs, finish

if TYPE_CHECKING:
    from proxy.models import EditJob, EditResult
    from proxy.upstream import Upstream, UpstreamResponse


class UpstreamCall(NamedTuple):
    """One request to a provider, described, not sent: a path under ``base_url`` (or
    an absolute URL on the provider's key hosts), its headers and body."""

    method: str
    path: str
    headers: Mapping[str, str] = {}
    # JSON bytes, or a multipart form that streams images from their temp files.
    body: bytes | Form | None = None


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


async def compose(
    adapter: Translator,
    job: EditJob,
    upstream: Upstream,
    *,
    hosts: Sequence[str] = (),
) -> EditResult:
    """One provider call end to end: what most adapters' ``edit`` is."""
    prepared = await prepare(job, adapter.needs(job))
    reply = await send(upstream, adapter.build(job, prepared))
    outputs = adapter.parse(upstream.name, reply)
    return await finish(outputs, job=job, upstream=upstream, hosts=hosts)
