"""HTTP handlers: intake → job → dispatch (``proxy.dispatch``) → respond."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy import dispatch, passthrough, retirements, streaming
from proxy.accounting import bill, splice
from proxy.context import CONTEXT
from proxy.guard import authorize
from proxy.headers import validate_extra_headers
from proxy.metrics import exposition
from proxy.models import (
    EDIT_FIELDS,
    GENERATE_FIELDS,
    EditJob,
    EditRequest,
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
from proxy.routing import Route
from proxy.state import (
    CLIENT_KEYS,
    CONFIG,
    FETCHER,
    LIFECYCLE,
    METRICS,
    OPENAPI,
    PIXELS,
    PRESSURE,
    PRICES,
    REDACTOR,
    RESULT_LINKS,
    ROUTER,
    TEMP_DIR,
    UPLOAD_STORE,
)
from proxy.tempfiles import UploadSet
from proxy.upload_api import caller

_encode = msgspec.json.encode
# A data URL longer than this is decoded in its own step of the event loop (64 MiB of
# them decoded in one step held it for tens of milliseconds).
_YIELD_AFTER = 1024 * 1024


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


def _route(request: web.Request, model: str) -> Route:
    ctx = request[CONTEXT]
    ctx.model = model  # logged even when it names nothing served
    app = request.app
    route = app[ROUTER].resolve(model)
    authorize(app[CLIENT_KEYS], ctx, f"{route.provider}/{route.model}")  # an alias's
    ctx.provider = route.provider
    route = retirements.apply(
        route,
        app[PRICES].catalogue,
        mode=app[CONFIG].lifecycle,
        ctx=ctx,
        metrics=app[METRICS],
    )
    if route.price_key in request.app[PRICES]:
        ctx.model_label = route.price_key
    return route


async def images_edits(request: web.Request) -> web.StreamResponse:
    app = request.app
    limits = app[CONFIG].limits
    kind = require_json_or_multipart(request, multipart=True)
    async with UploadSet(app[TEMP_DIR]) as uploads:
        if kind == "application/json":
            fields, extra = split_known(await read_json(request, limits), EDIT_FIELDS)
            body = convert(fields, EditRequest)
            route = _route(request, body.model)
            images = []
            for i, ref in enumerate(body.images):
                images.append(resolve_ref(ref, param=f"images[{i}]"))
                if ref.image_url is not None and len(ref.image_url) > _YIELD_AFTER:
                    await asyncio.sleep(0)  # one data URL's decode at a time

            mask = (
                resolve_ref(body.mask, param="mask", mask=True) if body.mask else None
            )
            job = _job(
                body, route, operation="edit", source="json", extra=extra,
                images=tuple(images), mask=mask,
            )  # fmt: skip
        else:
            form = await read_multipart(request, limits, uploads)
            app[METRICS].upload_bytes.inc(
                sum(i.size for i in form.images) + (form.mask.size if form.mask else 0)
            )
            route = _route(request, form.form.model)
            job = _job(
                form.form, route, operation="edit", source="multipart",
                extra=form.extra, images=tuple(form.images), mask=form.mask,
            )  # fmt: skip
        return await _answer(request, route, job, uploads)


async def images_generations(request: web.Request) -> web.StreamResponse:
    require_json_or_multipart(request, multipart=False)
    fields, extra = split_known(
        await read_json(request, request.app[CONFIG].limits), GENERATE_FIELDS
    )
    body = convert(fields, GenerateRequest)
    route = _route(request, body.model)
    job = _job(body, route, operation="generate", source="json", extra=extra)
    return await _answer(request, route, job)


async def _answer(
    request: web.Request,
    route: Route,
    job: EditJob,
    uploads: UploadSet | None = None,
) -> web.StreamResponse:
    """Dispatch the job, then answer: relayed stream, completed events or JSON."""
    app, ctx = request.app, request[CONTEXT]
    ctx.prompt = job.prompt  # the access log shows it only if configured
    links = app.get(RESULT_LINKS)
    if links is not None and not links.wanted(job):
        links = None
    elif links is not None:
        job = links.as_base64(job)  # then stored and linked, whatever the model
    services = dispatch.Services(
        router=app[ROUTER],
        fallbacks=app[CONFIG].fallbacks,
        keys=app[CLIENT_KEYS],
        metrics=app[METRICS],
        pixels=app[PIXELS],
        store=app[UPLOAD_STORE],
        fetcher=app[FETCHER],
    )
    key = caller(request)
    if key is not None:
        job = msgspec.structs.replace(job, client_id=app[CLIENT_KEYS].client_id(key))
    relay = None
    if passthrough.wanted(job, keep=links is not None):
        relay = passthrough.Relay(app[PRICES])
    mine = dispatch.Request(uploads=uploads, key=key, hold=ctx.hold, relay=relay)
    try:
        answer = await dispatch.run(services, mine, route, job)
        if answer.relayed is not None:
            if answer.route is not route:
                _route(request, f"{answer.route.provider}/{answer.route.model}")
            relaying = passthrough.Relaying(
                app[METRICS], app[PRICES], app[REDACTOR], ctx, ctx.hold
            )
            return await passthrough.relay(
                request, relaying, answer.route, answer.relayed
            )
    finally:
        if relay is not None:
            await relay.close()
    if answer.stream is not None and answer.adapter is not None:
        using = streaming.Relaying(
            metrics=app[METRICS],
            prices=app[PRICES],
            redactor=app[REDACTOR],
            max_response_bytes=app[CONFIG].limits.max_response_bytes,
            ctx=ctx,
            hold=ctx.hold,
        )
        return await streaming.relay(
            request, using, answer.route, answer.stream, answer.adapter
        )
    answered, result = answer.route, answer.result
    assert result is not None
    if answered is not route:
        # Labelled and logged as the fallback that answered.
        _route(request, f"{answered.provider}/{answered.model}")
    cost = bill(app[METRICS], app[PRICES], ctx, answered, result, job)
    # A success reply may echo our credentials too (a debug member, a fingerprint):
    # the provider's own members are relayed, so they are redacted like an error's.
    result = msgspec.structs.replace(result, body=app[REDACTOR].data(result.body))
    if links is not None:
        result = await links.convert(result)
    if job.stream:
        return streaming.completed_events(answered, job, result, cost)
    members = b'"provider":' + _encode(answered.provider) + b',"cost":' + _encode(cost)
    return web.Response(
        body=splice(result.body, members), content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if app[LIFECYCLE].draining:
        return web.json_response({"status": "draining"}, status=503)
    if app[PRESSURE].saturated:
        return web.json_response({"status": "saturated"}, status=503)
    return web.json_response({"status": "ready", "providers": app[ROUTER].names})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    # Multiprocess mode reads every worker's files: off the event loop.
    body = await asyncio.to_thread(exposition, metrics.registry, metrics.multiproc_dir)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp
