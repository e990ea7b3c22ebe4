"""Thin HTTP handlers: intake → job → adapter → OpenAI-shaped response."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy import fallback
from proxy.context import ANONYMOUS, CURRENT
from proxy.errors import InvalidRequest
from proxy.guard import authorize
from proxy.headers import validate_extra_headers
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
from proxy.providers.base import capabilities_of
from proxy.routing import Route
from proxy.state import GATEWAY, Gateway
from proxy.translate import fan_out
from proxy.uploads import UploadSet
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
    if fields.stream:
        raise InvalidRequest(
            "stream=true is not supported by this gateway yet", param="stream"
        )
    return EditJob(
        operation=operation,
        provider=route.provider,
        model=route.model,
        prompt=fields.prompt,
        source=source,
        images=images,
        mask=mask,
        n=fields.n,
        size=fields.size,
        quality=fields.quality,
        background=fields.background,
        output_format=fields.output_format,
        output_compression=fields.output_compression,
        input_fidelity=fields.input_fidelity,
        moderation=fields.moderation,
        response_format=fields.response_format,
        partial_images=fields.partial_images,
        user=fields.user,
        metadata=fields.metadata,
        extra=extra,
        extra_headers=validate_extra_headers(fields.extra_headers),
    )


def _route(gateway: Gateway, model: str) -> Route:
    route = gateway.router.resolve(model)
    authorize(gateway, f"{route.provider}/{route.model}")  # an alias's target
    ctx = CURRENT.get()
    if ctx is not None:
        ctx.provider = route.provider
        ctx.model = route.price_key if route.price_key in gateway.prices else "other"
    return route


async def images_edits(request: web.Request) -> web.Response:
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
        route, result = await _run(gateway, route, job)
    return _respond(gateway, route, result)


async def _run(
    gateway: Gateway, route: Route, job: EditJob
) -> tuple[Route, EditResult]:
    """The route that answered (the model's or a fallback) and its result."""
    ctx = CURRENT.get()
    if ctx is not None:
        ctx.prompt = job.prompt  # the access log shows it only if configured
    key = ctx.key if ctx is not None and gateway.keys else None
    answered, result = await fallback.run(
        route,
        job,
        _call,
        chain=gateway.config.fallbacks.get(f"{route.provider}/{route.model}", []),
        router=gateway.router,
        keys=gateway.keys,
        key=key,
        metrics=gateway.metrics,
    )
    if answered is not route:
        _route(gateway, f"{answered.provider}/{answered.model}")
    return answered, result


async def _call(route: Route, job: EditJob) -> EditResult:
    caps = capabilities_of(route.adapter, route.model)
    check_capabilities(job, caps, provider=route.provider)
    if not caps.native_n and (job.n or 1) > 1:
        # The provider makes one image per call: n calls in parallel, one result.
        return await fan_out(job, lambda one: route.adapter.edit(one, route.upstream))
    return await route.adapter.edit(job, route.upstream)


async def images_generations(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    require_json_or_multipart(request, multipart=False)
    fields, extra = split_known(
        await read_json(request, gateway.config.limits), GENERATE_FIELDS
    )
    body = convert(fields, GenerateRequest)
    route = _route(gateway, body.model)
    job = _job(body, route, operation="generate", source="json", extra=extra)
    route, result = await _run(gateway, route, job)
    return _respond(gateway, route, result)


def splice(body: bytes, extra: bytes) -> bytes:
    """Append ``"k":v`` members to an encoded JSON object without decoding it.

    One copy of the (often megabytes of base64) body: slicing and ``+`` made four.
    """
    close = body.rindex(b"}")
    assert not body[close + 1 :].strip()
    last = close - 1
    while last >= 0 and body[last] in b" \t\r\n":
        last -= 1
    sep = b"" if body[last : last + 1] == b"{" else b","
    return b"".join((memoryview(body)[: last + 1], sep, extra, b"}"))


def _respond(gateway: Gateway, route: Route, result: EditResult) -> web.Response:
    cost = result.cost
    if cost is None:
        cost = gateway.prices.cost(
            route.price_key, usage=result.usage, images=result.images
        )
    ctx = CURRENT.get()
    model_label = ctx.model if ctx is not None and ctx.model else "other"
    gateway.metrics.record_result(
        route.provider,
        model_label,
        ctx.key if ctx is not None else ANONYMOUS,
        cost=cost,
        usage=result.usage,
        images=result.images,
    )
    if ctx is not None:
        ctx.cost = cost
        ctx.images = result.images
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
