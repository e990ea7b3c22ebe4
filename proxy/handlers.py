"""HTTP handlers: intake → job → dispatch (``proxy.dispatch``) → respond."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy import held, passthrough, pipeline, streaming
from proxy.context import CONTEXT
from proxy.errors import ProxyError
from proxy.forward import Answer, Forward
from proxy.headers import validate_extra_headers
from proxy.idempotency_http import Idem, bound, requested
from proxy.idempotency_http import answer as idempotent
from proxy.jobs.prefer import wants_async
from proxy.jobs.routes import RUNNER, accept
from proxy.json_body import read_edit_json
from proxy.metrics import exposition
from proxy.models import (
    EDIT_FIELDS,
    FORM_FIELDS,
    GENERATE_FIELDS,
    EditForm,
    EditJob,
    EditRequest,
    GenerateRequest,
    ImageInput,
    StoredImage,
    _Fields,
)
from proxy.parsing import (
    convert,
    read_json,
    read_multipart,
    require_json_or_multipart,
    split_known,
)
from proxy.providers.base import capabilities_of
from proxy.refs import resolve_ref
from proxy.routing import Route
from proxy.state import (
    CONFIG,
    LIFECYCLE,
    METRICS,
    OPENAPI,
    PRESSURE,
    ROUTER,
    Resources,
    resources,
)
from proxy.tempfiles import UploadSet

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


def _route(request: web.Request, model: str, res: Resources | None = None) -> Route:
    if res is None:
        res = resources(request.app)
    return pipeline.route_for(res, request[CONTEXT], model)


async def images_edits(request: web.Request) -> web.StreamResponse:
    app = request.app
    res = resources(app)
    limits = res.config.limits
    kind = require_json_or_multipart(request, multipart=True)
    key, idem = requested(request), None
    async with UploadSet(res.temp_dir) as uploads:
        if kind == "application/json":
            doc = await read_edit_json(request, limits)
            idem = bound(request, key, "json", doc.canonical() if key else None)
            fields, extra = split_known(doc.obj, EDIT_FIELDS)
            body = convert(fields, EditRequest)
            route = _route(request, body.model, res)
            images = []
            for i, ref in enumerate(body.images):
                images.append(resolve_ref(ref, param=f"images[{i}]", urls=doc.urls))
                if ref.image_url is not None and len(ref.image_url) > _YIELD_AFTER:
                    await asyncio.sleep(0)  # one data URL's decode at a time
            mask = (
                resolve_ref(body.mask, param="mask", mask=True, urls=doc.urls)
                if body.mask
                else None
            )
            job = _job(
                body, route, operation="edit", source="json", extra=extra,
                images=tuple(images), mask=mask,
            )  # fmt: skip
        else:
            ahead = None if key is not None else _forwarding(request, app, uploads)
            try:
                form = await read_multipart(
                    request, limits, uploads, digest=bool(key), watch=ahead
                )
            except BaseException as exc:
                if ahead is not None:
                    await ahead.abandon(exc)
                raise
            idem = bound(request, key, "form", form.canonical)
            res.metrics.upload_add(
                sum(i.size for i in form.images) + (form.mask.size if form.mask else 0)
            )
            if ahead is not None:
                forwarded = await ahead.complete(form.images[0])
                if forwarded is not None:
                    return forwarded
            route = _route(request, form.form.model, res)
            job = _job(
                form.form, route, operation="edit", source="multipart",
                extra=form.extra, images=tuple(form.images), mask=form.mask,
            )  # fmt: skip
        return await _answer(request, route, job, uploads, idem=idem)


def _forwarding(
    request: web.Request, app: web.Application, uploads: UploadSet
) -> Forward | None:
    """A ``Forward`` for a multipart edit that may go to its provider as it arrives
    (``proxy.forward``), None when it cannot whatever its fields say."""
    least, declared = app[CONFIG].limits.forward_min_bytes, request.content_length
    if not least or (declared is not None and declared < least):
        # Arrives fast enough spooled, and a mask after the image would cut the
        # forward off (a body of unknown length, streamed by its client, may go).
        return None
    if app.get(RUNNER) is not None and wants_async(request):
        return None
    return _forward(request, app, uploads)


def _forward(request: web.Request, app: web.Application, uploads: UploadSet) -> Forward:
    # Apart from ``_forwarding``: its closures' cells are made only for a forward.
    def forwards(route: Route) -> bool:
        named = f"{route.provider}/{route.model}"
        allowed = getattr(route.adapter, "forwards_uploads", False)
        return bool(allowed) and named not in app[CONFIG].fallbacks

    def launch(raw: dict[str, Any], image: StoredImage) -> tuple[Answer, int] | None:
        fields, extra = split_known(raw, FORM_FIELDS)
        try:
            form = convert(fields, EditForm, strict=False)
            if form.stream or not forwards(app[ROUTER].resolve(form.model)):
                return None
            route = _route(request, form.model)  # its refusals are the spooled run's
            if not forwards(route):
                return None
            job = _job(
                form, route, operation="edit", source="multipart", extra=extra,
                images=(image,),
            )  # fmt: skip
        except ProxyError:
            return None  # the spooled run refuses it, after the body as ever
        caps = capabilities_of(route.adapter, route.model)
        return _answer(request, route, job, uploads), caps.max_image_bytes

    return Forward(app[CONFIG].limits, launch)


async def images_generations(request: web.Request) -> web.StreamResponse:
    require_json_or_multipart(request, multipart=False)
    key = requested(request)
    raw = await read_json(request, request.app[CONFIG].limits)
    idem = bound(request, key, "json", raw)
    fields, extra = split_known(raw, GENERATE_FIELDS)
    body = convert(fields, GenerateRequest)
    route = _route(request, body.model)
    job = _job(body, route, operation="generate", source="json", extra=extra)
    return await _answer(request, route, job, idem=idem)


async def _answer(
    request: web.Request,
    route: Route,
    job: EditJob,
    uploads: UploadSet | None = None,
    *,
    idem: Idem | None = None,
    keep: bool = False,
) -> web.StreamResponse:
    """Dispatch the job, then answer: relayed stream, completed events or JSON.

    With an Idempotency-Key (``idem``) the answer is kept for repeats, or a repeat is
    answered from what was kept (``proxy.idempotency_http``): it must stay buffered,
    the JSON bytes built at the end of this function."""
    if idem is not None:
        return await _kept(request, route, job, uploads, idem)
    app, ctx = request.app, request[CONTEXT]
    res = resources(app)
    ctx.prompt = job.prompt  # the access log shows it only if configured
    key = ctx.key if res.keys else None  # upload_api.caller
    job, links = pipeline.prepare(res, job, key)
    if (accepting := accept(request, route, job, links)) is not None:
        return await accepting  # Prefer: respond-async (proxy/jobs)
    relay = None
    if passthrough.wanted(job, keep=keep or pipeline.keeps(res, links)):
        relay = passthrough.Relay(res.prices)
    try:
        answer = await pipeline.run(
            res, route, job, key=key, hold=ctx.hold, uploads=uploads, ctx=ctx,
            relay=relay,
        )  # fmt: skip
        if answer.relayed is not None:
            if answer.route is not route:
                _route(request, f"{answer.route.provider}/{answer.route.model}")
            relaying = passthrough.Relaying(
                res.metrics, res.prices, res.redactor, ctx, ctx.hold,
                app[PRESSURE].relays,
            )  # fmt: skip
            return await passthrough.relay(
                request, relaying, answer.route, answer.relayed
            )
    finally:
        if relay is not None and relay.opened is not None:  # no coroutine if none
            await relay.close()
    if answer.stream is not None and answer.adapter is not None:
        using = streaming.Relaying(
            metrics=res.metrics,
            prices=res.prices,
            redactor=res.redactor,
            max_response_bytes=res.config.limits.max_response_bytes,
            ctx=ctx,
            hold=ctx.hold,
        )
        return await streaming.relay(
            request, using, answer.route, answer.stream, answer.adapter
        )
    answered, result, cost = await pipeline.finish(res, ctx, route, job, answer, links)
    if job.stream:
        return streaming.completed_events(answered, job, result, cost)
    if len(result.body) > held.WHOLE:  # written in pieces, never joined
        return held.HeldResponse(pipeline.json_parts(answered, result, cost))
    return web.Response(
        body=pipeline.json_body(answered, result, cost),
        content_type="application/json",
    )


def _kept(
    request: web.Request,
    route: Route,
    job: EditJob,
    uploads: UploadSet | None,
    idem: Idem,
) -> Awaitable[web.StreamResponse]:
    # Its own function: a closure in ``_answer`` made cells of its variables on every
    # call, garbage for the collector to walk while the request is in flight.
    run = lambda: _answer(request, route, job, uploads, keep=True)  # noqa: E731
    return idempotent(request, idem, job.stream, run)


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
