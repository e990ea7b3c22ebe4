"""Thin HTTP handlers: intake → job → adapter → OpenAI-shaped response."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy import fallback, pixels, streaming
from proxy.accounting import account, price, splice
from proxy.budget import HOLD, charged
from proxy.context import CURRENT
from proxy.guard import authorize
from proxy.headers import validate_extra_headers
from proxy.inputs import resolve_inputs
from proxy.models import (
    EDIT_FIELDS,
    GENERATE_FIELDS,
    EditJob,
    EditRequest,
    EditResult,
    GenerateRequest,
    ImageInput,
    _Fields,
)
from proxy.parsing import (
    convert,
    read_json,
    read_multipart,
    require_json_or_multipart,
    resolve_ref,
    split_known,
)
from proxy.prepare import check_capabilities
from proxy.providers.base import StreamingAdapter, capabilities_of
from proxy.routing import Route
from proxy.state import GATEWAY, Gateway
from proxy.tempfiles import UploadSet
from proxy.translate import fan_out
from proxy.upload_api import caller
from proxy.workers import exposition

_encode = msgspec.json.encode


def _job(
    fields: _Fields,
    route: Route,
    *,
    operation: Literal["edit", "generate"],
    source: Literal["json", "multipart"],
    extra: dict[str, Any],
    images: tuple[ImageInput, ...] = (),
    mask: ImageInput | None = None,
) -> EditJob:
    return EditJob.from_request(
        fields,
        operation=operation,
        provider=route.provider,
        model=route.model,
        source=source,
        extra=extra,
        extra_headers=validate_extra_headers(fields.extra_headers),
        images=images,
        mask=mask,
    )


def _route(gateway: Gateway, model: str) -> Route:
    ctx = CURRENT.get()
    if ctx is not None:
        ctx.model = model  # logged even when it names nothing served
    route = gateway.router.resolve(model)
    authorize(gateway, f"{route.provider}/{route.model}")  # an alias's target
    if ctx is not None:
        ctx.provider = route.provider
        if route.price_key in gateway.prices:
            ctx.model_label = route.price_key
    return route


async def images_edits(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    limits = gateway.config.limits
    kind = require_json_or_multipart(request, multipart=True)
    async with UploadSet(gateway.files) as uploads:
        if kind == "application/json":
            fields, extra = split_known(await read_json(request, limits), EDIT_FIELDS)
            body = convert(fields, EditRequest)
            route = _route(gateway, body.model)
            images = tuple(
                resolve_ref(ref, param=f"images[{i}]")
                for i, ref in enumerate(body.images)
            )
            mask = (
                resolve_ref(body.mask, param="mask", mask=True) if body.mask else None
            )
            job = _job(
                body, route, operation="edit", source="json", extra=extra,
                images=images, mask=mask,
            )  # fmt: skip
        else:
            form = await read_multipart(request, limits, uploads)
            gateway.metrics.upload_bytes.inc(
                sum(i.size for i in form.images) + (form.mask.size if form.mask else 0)
            )
            route = _route(gateway, form.form.model)
            job = _job(
                form.form, route, operation="edit", source="multipart",
                extra=form.extra, images=tuple(form.images), mask=form.mask,
            )  # fmt: skip
        return await _run(request, gateway, route, job, uploads)


async def _run(
    request: web.Request,
    gateway: Gateway,
    route: Route,
    job: EditJob,
    uploads: UploadSet | None = None,
) -> web.StreamResponse:
    """Answer with the model's route or a fallback's; stream when asked."""
    ctx = CURRENT.get()
    if ctx is not None:
        ctx.prompt = job.prompt  # the access log shows it only if configured
    adapter = route.adapter
    if (
        job.stream
        and isinstance(adapter, StreamingAdapter)
        and capabilities_of(adapter, route.model).streaming
    ):
        # A relayed stream cannot fall back once it started; it is not retried.
        hold = HOLD.get()
        if hold is not None:
            await hold.ensure(route, job, native_n=True)
        streamed = await _prepare(gateway, route, job, uploads)
        return await streaming.relay(request, gateway, route, streamed, adapter)
    key = ctx.key if ctx is not None and gateway.keys else None
    answered, result = await fallback.run(
        route,
        job,
        lambda one_route, one_job: _call(gateway, uploads, one_route, one_job),
        chain=gateway.config.fallbacks.get(f"{route.provider}/{route.model}", []),
        router=gateway.router,
        keys=gateway.keys,
        key=key,
        metrics=gateway.metrics,
    )
    if answered is not route:
        _route(gateway, f"{answered.provider}/{answered.model}")
    if job.stream:
        return streaming.completed_events(gateway, answered, job, result)
    return _respond(gateway, answered, result)


async def _prepare(
    gateway: Gateway, route: Route, job: EditJob, uploads: UploadSet | None
) -> EditJob:
    """Check the job against the route's provider and resolve its image references
    (stored files, URLs to fetch) into what that provider takes."""
    caps = capabilities_of(route.adapter, route.model)
    check_capabilities(job, caps, provider=route.provider)
    # The adapter's mask conversion runs under the gateway's decode slots.
    pixels.GATE.set(gateway.pixels)
    if uploads is None:
        return job
    assert gateway.store is not None
    assert gateway.fetcher is not None
    job = await resolve_inputs(
        job, caps, provider=route.provider, files=gateway.store,
        fetcher=gateway.fetcher, uploads=uploads, owner=caller(gateway),
    )  # fmt: skip
    check_capabilities(job, caps, provider=route.provider)
    await gateway.pixels.check_inputs(job)
    return job


async def _call(
    gateway: Gateway, uploads: UploadSet | None, route: Route, job: EditJob
) -> EditResult:
    caps = capabilities_of(route.adapter, route.model)
    hold = HOLD.get()
    if hold is not None:
        # Before anything is sent: room for this call's worst case, or a 429.
        await hold.ensure(route, job, native_n=caps.native_n)
    job = await _prepare(gateway, route, job, uploads)
    plain = msgspec.structs.replace(job, stream=False)
    if not caps.native_n and (job.n or 1) > 1:
        # The provider makes one image per call: n calls in parallel, one result.
        # Each call that answers is charged, whether or not its siblings do.
        return await fan_out(
            plain,
            lambda one: charged(route, one, route.adapter.edit(one, route.upstream)),
        )
    return await charged(route, plain, route.adapter.edit(plain, route.upstream))


async def images_generations(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    require_json_or_multipart(request, multipart=False)
    fields, extra = split_known(
        await read_json(request, gateway.config.limits), GENERATE_FIELDS
    )
    body = convert(fields, GenerateRequest)
    route = _route(gateway, body.model)
    job = _job(body, route, operation="generate", source="json", extra=extra)
    return await _run(request, gateway, route, job)


def _respond(gateway: Gateway, route: Route, result: EditResult) -> web.Response:
    cost = result.cost
    if cost is None:
        cost = price(gateway, route, usage=result.usage, images=result.images)
    account(gateway, route, cost, result.images, usage=result.usage)
    members = b'"provider":' + _encode(route.provider) + b',"cost":' + _encode(cost)
    return web.Response(
        body=splice(result.body, members), content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    if gateway.draining:
        return web.json_response({"status": "draining"}, status=503)
    if gateway.pressure.saturated:
        return web.json_response({"status": "saturated"}, status=503)
    return web.json_response({"status": "ready", "providers": gateway.router.names})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[GATEWAY].openapi, content_type="application/json"
    )


async def metrics(request: web.Request) -> web.Response:
    metrics = request.app[GATEWAY].metrics
    # Multiprocess mode reads every worker's files: off the event loop.
    body = await asyncio.to_thread(exposition, metrics.registry, metrics.multiproc_dir)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp
