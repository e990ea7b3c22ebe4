"""The request pipeline between a validated job and the route that answered it.

``plan`` is pure: from a job and its route's capabilities it decides whether the answer
is a relayed stream, whether ``n`` becomes n single-image calls, and which image
references need resolving. ``run`` does the I/O: per route it checks the job once,
resolves its inputs (once per kind of provider, reused down a fallback chain), reserves
the budget, and calls the adapter (single, fanned out, or down the model's fallback
list, ``proxy.fallback``). It returns the route that answered and either its result or
the prepared job to stream; the handler turns that into a response and
``proxy.accounting`` prices and counts it. Nothing here writes a response.

Strategy for a stream: a relayed stream cannot fall back once it started, so a stream
runs on the model's own route only and is never retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TypeGuard

import msgspec

from proxy import fallback, pixels
from proxy.budget import Hold, charged
from proxy.client_keys import KeyRing
from proxy.errors import InvalidRequest, ProxyError
from proxy.fetch import Fetcher
from proxy.inputs import resolve_inputs
from proxy.metrics import Metrics
from proxy.models import EditJob, EditResult, FileRef, RemoteImage, StoredImage
from proxy.passthrough import Relay, Relayed
from proxy.pixels import PixelGate
from proxy.providers.base import Capabilities, StreamingAdapter, capabilities_of
from proxy.routing import Route, Router
from proxy.tempfiles import UploadSet
from proxy.translate import fan_out
from proxy.upload_backend import FileStore


# Structs rather than dataclasses where made per request: msgspec's __init__ is C
# (a frozen dataclass sets each field through object.__setattr__).
class Plan(msgspec.Struct, frozen=True, gc=False):  # only atoms: no cycle
    stream: bool  # relay the provider's own event stream
    fan_out: bool  # the provider makes one image per call: n calls, one result
    resolve: tuple[str, ...]  # params whose reference is turned into bytes first


def plan(job: EditJob, caps: Capabilities) -> Plan:
    """What running ``job`` on a provider with ``caps`` takes; no I/O."""
    inputs = [(f"images[{i}]", img) for i, img in enumerate(job.images)]
    if job.mask is not None:
        inputs.append(("mask", job.mask))
    # A URL the provider fetches itself is still checked here (its scheme).
    resolve: tuple[str, ...] = ()
    if job.source == "json":  # tested out here: ``job`` in the genexpr made a cell
        resolve = tuple(
            param for param, image in inputs if isinstance(image, FileRef | RemoteImage)
        )
    return Plan(
        stream=job.stream and caps.streaming,
        fan_out=not caps.native_n and (job.n or 1) > 1,
        resolve=resolve,
    )


def check_job(job: EditJob, caps: Capabilities, *, provider: str) -> None:
    """A 400 naming the field for what the provider cannot take, before any fetch or
    upstream call: the operation, the number of images, a mask."""
    if job.operation == "edit" and not caps.edit:
        raise InvalidRequest(
            f"provider '{provider}' does not support image edits", param="model"
        )
    if job.operation == "generate" and not caps.generate:
        raise InvalidRequest(
            f"provider '{provider}' does not support image generation", param="model"
        )
    if len(job.images) > caps.max_images:
        raise InvalidRequest(
            f"provider '{provider}' accepts at most {caps.max_images} input image(s); "
            f"got {len(job.images)}",
            param="images",
        )
    if job.mask is not None and not caps.mask:
        raise InvalidRequest(
            f"provider '{provider}' does not accept a mask", param="mask"
        )


def check_inputs(job: EditJob, caps: Capabilities, *, provider: str) -> None:
    """A 400 for an image (uploaded, stored or fetched) of a type or size the
    provider does not take."""
    inputs = [(f"images[{i}]", img) for i, img in enumerate(job.images)]
    if job.mask is not None:
        inputs.append(("mask", job.mask))
    for param, image in inputs:
        if not isinstance(image, StoredImage):
            continue
        if image.content_type not in caps.image_types:
            allowed = ", ".join(sorted(caps.image_types))
            raise InvalidRequest(
                f"provider '{provider}' does not accept {image.content_type} for "
                f"'{param}'; it takes {allowed}",
                param=param,
            )
        if image.size > caps.max_image_bytes:
            raise InvalidRequest(
                f"'{param}' is {image.size} bytes; provider '{provider}' accepts at "
                f"most {caps.max_image_bytes}",
                param=param,
            )


@dataclass(frozen=True, slots=True)
class Services:
    """The app's resources a dispatch uses, taken from its ``AppKey``s."""

    router: Router
    fallbacks: Mapping[str, list[str]]
    keys: KeyRing
    metrics: Metrics
    pixels: PixelGate
    store: FileStore
    fetcher: Fetcher


class Request(msgspec.Struct):
    """What one request brings to its dispatch."""

    uploads: UploadSet | None  # None: a job without image inputs (generations)
    key: str | None  # the client key's name when client keys are configured
    hold: Hold | None  # the key's budget hold, if it has a budget
    # Resolved jobs by what their provider takes, reused down a fallback chain.
    resolved: dict[tuple[bool, bool], EditJob] = msgspec.field(default_factory=dict)
    # Set when the answer may be relayed as it arrives (``proxy.passthrough``).
    relay: Relay | None = None
    # Fanned-out calls that answered: billed by the provider even when a sibling's
    # failure fails the request (``proxy.accounting.bill_answered``).
    answered: list[tuple[Route, EditJob, EditResult]] = msgspec.field(
        default_factory=list
    )


class Answer(msgspec.Struct, frozen=True):
    route: Route  # the route that answered (a fallback's, if the model's failed)
    result: EditResult | None  # None: ``stream`` is to be relayed
    stream: EditJob | None = None
    adapter: StreamingAdapter | None = None
    relayed: Relayed | None = None  # a reply to relay as it arrives


_STREAMS: dict[type, bool] = {}  # by adapter class: a few entries


def _streams(adapter: object) -> TypeGuard[StreamingAdapter]:
    """``isinstance(adapter, StreamingAdapter)``, kept per class: a runtime
    protocol's isinstance walks the protocol's members on every call."""
    kind = type(adapter)
    found = _STREAMS.get(kind)
    if found is None:
        found = _STREAMS[kind] = isinstance(adapter, StreamingAdapter)
    return found


async def run(
    services: Services, request: Request, route: Route, job: EditJob
) -> Answer:
    """Answer ``job`` on ``route`` or down its fallback chain (see the module doc)."""
    adapter = route.adapter
    caps = capabilities_of(adapter, route.model)
    planned = plan(job, caps)
    if planned.stream and _streams(adapter):
        if request.hold is not None:
            await request.hold.ensure(route, job, native_n=True)
        prepared = await _prepare(services, request, route, job, caps, planned)
        return Answer(route, None, stream=prepared, adapter=adapter)
    # The model's route first, in this coroutine (the fallbacks' loop in its own,
    # ``_down_chain``, only after a failure: a frame less on every step).
    try:
        result = await _call(services, request, route, job, caps, planned)
    except fallback.FALLBACK_ON as exc:
        chain = services.fallbacks.get(f"{route.provider}/{route.model}", [])
        if not chain:
            raise
        failure: ProxyError = exc
    else:
        return _answered(route, result)
    answered, result = await _down_chain(services, request, route, job, chain, failure)
    return _answered(answered, result)


def _answered(route: Route, result: EditResult | Relayed) -> Answer:
    if isinstance(result, Relayed):
        return Answer(route, None, relayed=result)
    return Answer(route, result)


async def _down_chain(
    services: Services,
    request: Request,
    route: Route,
    job: EditJob,
    chain: list[str],
    failure: ProxyError,
) -> tuple[Route, EditResult | Relayed]:
    """The model's fallbacks (``proxy.fallback``) after its route failed with
    ``failure``, while they fail in a way another provider may not; each route's job
    is checked against its own provider."""
    causes: list[tuple[str, ProxyError]] = [(route.provider, failure)]
    failed = route.provider
    for nxt in fallback.candidates(
        chain,
        router=services.router,
        keys=services.keys,
        key=request.key,
        causes=causes,
    ):
        services.metrics.fallbacks.labels(failed).inc()
        moved = msgspec.structs.replace(job, provider=nxt.provider, model=nxt.model)
        try:
            caps = capabilities_of(nxt.adapter, nxt.model)
            return nxt, await _call(services, request, nxt, moved, caps)
        except (*fallback.FALLBACK_ON, InvalidRequest) as exc:
            causes.append((nxt.provider, exc))
            failed = nxt.provider
    raise fallback.all_failed(route, causes)


async def _prepare(
    services: Services,
    request: Request,
    route: Route,
    job: EditJob,
    caps: Capabilities,
    planned: Plan,
) -> EditJob:
    """The job checked against the route's provider, its image references resolved
    (stored files, URLs to fetch) into what that provider takes."""
    check_job(job, caps, provider=route.provider)
    # Mask conversions inside the adapter run under the gateway's decode slots; the
    # adapter's edit(job, upstream) carries no gateway state, hence the ContextVar.
    pixels.GATE.set(services.pixels)
    if request.uploads is None:
        return job
    if planned.resolve:
        kind = (caps.image_urls, caps.file_ids)
        resolved = request.resolved.get(kind)
        if resolved is None:
            resolved = await resolve_inputs(
                job, caps, provider=route.provider, files=services.store,
                fetcher=services.fetcher, uploads=request.uploads,
                owner=request.key,
            )  # fmt: skip
            request.resolved[kind] = resolved
        # A fallback runs on its own provider and model.
        job = msgspec.structs.replace(resolved, provider=job.provider, model=job.model)
    check_inputs(job, caps, provider=route.provider)
    await services.pixels.check_inputs(job)
    return job


async def _call(
    services: Services,
    request: Request,
    route: Route,
    job: EditJob,
    caps: Capabilities,
    planned: Plan | None = None,  # the route's own plan, when already made
) -> EditResult | Relayed:
    if planned is None:
        planned = plan(job, caps)
    hold = request.hold
    if hold is not None:
        # Before anything is sent: room for this call's worst case, or a 429.
        await hold.ensure(route, job, native_n=caps.native_n)
    job = await _prepare(services, request, route, job, caps, planned)
    plain = msgspec.structs.replace(job, stream=False)
    relay = request.relay
    if relay is not None and relay.takes(route, fan_out=planned.fan_out):
        return await relay.open(route, plain, hold)
    if planned.fan_out:
        return await _fanned(request, route, plain)
    return await charged(hold, route, plain, route.adapter.edit(plain, route.upstream))


def _fanned(request: Request, route: Route, plain: EditJob) -> Awaitable[EditResult]:
    # Apart from ``_call``: its closure's cells would be made on every call.
    hold = request.hold

    # Each call that answers is charged, whether or not its siblings do, and
    # kept so that a request failed by a sibling still accounts for it.
    async def one_call(one: EditJob) -> EditResult:
        call = route.adapter.edit(one, route.upstream)
        result = await charged(hold, route, one, call)
        request.answered.append((route, one, result))
        return result

    return fan_out(plain, one_call)
