"""The job routes: an edit or generation accepted as a job (``accept``), and
``GET /v3/images/jobs``, ``GET`` and ``DELETE /v3/images/jobs/{id}``; the job
machinery's lifetime (``jobs_ctx``).

A request becomes a job only once it is valid: its fields, its model and the key's
right to it, what the provider takes (``dispatch.check_job``), its webhook URL; a bad
request still gets its 4xx at once. Its image bytes are stored (``proxy.jobs.inputs``)
and its record written before the 202. Jobs belong to the client key that made them;
another key's job is a 404, as if it did not exist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from proxy import dispatch, held
from proxy.context import CONTEXT
from proxy.environment import MULTIPROC_ENV
from proxy.errors import InvalidRequest, NotFound, ProxyError, RateLimited
from proxy.jobs.inputs import discard, stash, stored_ids
from proxy.jobs.metrics import JobMetrics
from proxy.jobs.prefer import ACTIVE, wants_async
from proxy.jobs.queue import JobQueue, MemoryQueue
from proxy.jobs.records import (
    ANONYMOUS,
    JobRecord,
    accepted,
    job_fields,
    new_id,
    view,
    view_parts,
)
from proxy.jobs.runner import Runner
from proxy.jobs.store import JobStore, MemoryJobs
from proxy.jobs.webhooks import PARAM, Sender, secrets_from
from proxy.models import EditJob, FileRef, RemoteImage
from proxy.providers.base import Capabilities, capabilities_of
from proxy.redact import error_detail
from proxy.result_links import ResultLinks
from proxy.routing import Route
from proxy.state import (
    CLIENT_KEYS,
    CONFIG,
    FETCHER,
    METRICS,
    PIXELS,
    REDACTOR,
    UPLOAD_STORE,
)

log = logging.getLogger("imagegate")
RUNNER = web.AppKey("jobs", Runner)
HEADER = "Imagegate-Webhook-Url"
MAX_LIST_LIMIT = 100


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1", "/v3"):
        app.router.add_get(f"{prefix}/images/jobs", list_jobs)
        app.router.add_get(f"{prefix}/images/jobs/{{job_id}}", show_job)
        app.router.add_delete(f"{prefix}/images/jobs/{{job_id}}", cancel_job)


def _key(request: web.Request) -> str | None:
    """The client key's name with client keys configured, else None (anonymous)."""
    return request[CONTEXT].key if request.app[CLIENT_KEYS] else None


def _webhook(
    request: web.Request, job: EditJob, runner: Runner, owner: str
) -> str | None:
    named: Any = job.extra.get(PARAM)
    if named is None:
        named = request.headers.get(HEADER)
    if named is None:
        return runner.sender.default_url(owner)
    if not isinstance(named, str) or not named:
        raise InvalidRequest(f"'{PARAM}' must be a URL string", param=PARAM)
    return named


def accept(
    request: web.Request,
    route: Route,
    job: EditJob,
    links: ResultLinks | None,
) -> Awaitable[web.Response] | None:
    """The 202 (to await) for a valid request that prefers ``respond-async``; None
    to answer it synchronously (no such preference, or jobs disabled), decided
    without a coroutine. With an Idempotency-Key the 202 is kept like any answer
    (``proxy.idempotency_http``): a repeat gets the same job."""
    runner = request.app.get(RUNNER)
    if runner is None or not wants_async(request):
        return None
    return _accept(request, route, job, links, runner)


async def _accept(
    request: web.Request,
    route: Route,
    job: EditJob,
    links: ResultLinks | None,
    runner: Runner,
) -> web.Response:
    app = request.app
    if job.stream:
        raise InvalidRequest(
            "'stream' cannot be combined with Prefer: respond-async: a job's result "
            "is the whole answer",
            param="stream",
        )
    caps = capabilities_of(route.adapter, route.model)
    # What the synchronous call refuses before any upstream call, refused now.
    dispatch.check_job(job, caps, provider=route.provider)
    dispatch.check_inputs(job, caps, provider=route.provider)
    await app[PIXELS].check_inputs(job)
    key = _key(request)
    await _check_references(app, job, caps, key)
    owner = key or ANONYMOUS
    url = _webhook(request, job, runner, owner)
    if url is not None:
        await runner.sender.check(url, owner)
    if PARAM in job.extra:
        extra = {k: v for k, v in job.extra.items() if k != PARAM}
        job = msgspec.structs.replace(job, extra=extra)
    images, mask = await stash(app[UPLOAD_STORE], job, key)
    record = JobRecord(
        id=new_id(),
        key=key,
        created_at=int(time.time()),
        model=request[CONTEXT].model or f"{route.provider}/{route.model}",
        fields=job_fields(job),
        images=images,
        mask=mask,
        links=links is not None,
        webhook_url=url,
        webhook="none" if url is None else "pending",
    )
    try:
        cap = app[CONFIG].jobs.max_open_per_key
        if not await runner.store.create(record, max_open=cap):
            raise RateLimited(
                f"key '{owner}' has {cap} jobs not ended yet, its limit; wait for "
                "one to end or cancel one",
                code="too_many_jobs",
                headers={"Retry-After": "5"},
            )
        await runner.queue.put(record.id)
    except ProxyError as exc:
        await discard(app[UPLOAD_STORE], stored_ids(record), key)
        failed = msgspec.structs.replace(
            record,
            state="failed",
            status_code=exc.status,
            webhook="none",
            error=msgspec.to_builtins(error_detail(exc, app[REDACTOR])),
        )
        try:
            await runner.store.transition(failed, ("queued",))
        finally:
            raise exc
    runner.metrics.jobs.labels("queued").inc()
    location = f"/v3/images/jobs/{record.id}"
    return web.Response(
        status=202,
        body=accepted(record),
        content_type="application/json",
        headers={"Location": location, "Preference-Applied": "respond-async"},
    )


async def _check_references(
    app: web.Application, job: EditJob, caps: Capabilities, key: str | None
) -> None:
    """A file id the gateway does not hold (for a provider without ids of its own)
    and a URL of a scheme never fetched are refused now, not when the job runs."""
    named = [(f"images[{i}]", image) for i, image in enumerate(job.images)]
    if job.mask is not None:
        named.append(("mask", job.mask))
    for param, image in named:
        if isinstance(image, RemoteImage):
            app[FETCHER].check_scheme(image.url, param=f"{param}.image_url")
        elif (
            isinstance(image, FileRef)
            and not caps.file_ids
            and await app[UPLOAD_STORE].lookup(image.file_id, owner=key) is None
        ):
            raise NotFound(
                f"'{param}.file_id' names no file this gateway holds "
                f"({image.file_id!r}); upload it with POST /v3/upload",
                param=f"{param}.file_id",
                code="file_not_found",
            )


def _not_found(job_id: str) -> NotFound:
    return NotFound(
        f"no job {job_id[:80]!r} (jobs are kept jobs.ttl_s after they were created)",
        code="job_not_found",
    )


def _runner(request: web.Request) -> Runner:
    runner = request.app.get(RUNNER)
    if runner is None:
        raise NotFound(
            "jobs are off: several worker processes need redis_url to share them",
            code="jobs_unavailable",
        )
    return runner


async def _mine(request: web.Request) -> tuple[Runner, JobRecord]:
    runner = _runner(request)
    job_id = request.match_info["job_id"]
    record = await runner.store.get(job_id)
    if record is None or record.key != _key(request):
        raise _not_found(job_id)
    return runner, record


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def show_job(request: web.Request) -> web.StreamResponse:
    runner, record = await _mine(request)
    result = None
    if record.state == "succeeded":
        result = await runner.store.result(record.id)
    return held.response(view_parts(record, result))  # a large result in pieces


async def cancel_job(request: web.Request) -> web.Response:
    """Cancels a job not ended yet; the job as it is afterwards (an ended job is left
    as it was)."""
    runner, record = await _mine(request)
    if record.state in ("queued", "in_progress"):
        cancelled = msgspec.structs.replace(
            record, state="cancelled", completed_at=int(time.time())
        )
        if await runner.store.transition(cancelled, ("queued", "in_progress")):
            runner.metrics.jobs.labels("cancelled").inc()
            runner.cancel_here(record.id)
        record = await runner.store.get(record.id) or record
    return _json(view(record))


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "20")
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIST_LIMIT:
        raise InvalidRequest(
            f"'limit' must be an integer from 1 to {MAX_LIST_LIMIT}", param="limit"
        )
    return int(text)


async def list_jobs(request: web.Request) -> web.Response:
    """The caller's jobs, newest first, without their results (GET one for it)."""
    runner = _runner(request)
    limit = _limit(request)
    after = request.query.get("after")
    owner = _key(request) or ANONYMOUS
    records, more = await runner.store.page(owner, limit=limit, after=after)
    views = [view(r) for r in records]
    first = msgspec.json.encode(records[0].id) if records else b"null"
    last = msgspec.json.encode(records[-1].id) if records else b"null"
    body = b"".join(
        (
            b'{"object":"list","data":[',
            b",".join(views),
            b'],"first_id":',
            first,
            b',"last_id":',
            last,
            b',"has_more":',
            b"true" if more else b"false",
            b"}",
        )
    )
    return _json(body)


def jobs_ctx(
    environ: Mapping[str, str],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The job store, queue, webhook sender and workers (``RUNNER``), with Redis when
    ``redis_url`` is set."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        settings = config.jobs
        metrics = JobMetrics(app[METRICS].registry)
        if not settings.enabled:
            yield
            return
        if config.redis_url is None and environ.get(MULTIPROC_ENV):
            # Each worker process would hold its own jobs, and a poll could land on
            # another worker: jobs across workers need the shared store.
            log.warning(
                "jobs need redis_url with several worker processes; "
                "Prefer: respond-async is ignored"
            )
            yield
            return
        close: Callable[[], Awaitable[None]] | None = None
        store: JobStore
        queue: JobQueue
        if config.redis_url is not None:
            from proxy.jobs.redis_jobs import connect

            store, queue, close = connect(config.redis_url, config.redis, settings)
        else:
            store = MemoryJobs(ttl_s=settings.ttl_s, max_kept=settings.max_kept)
            queue = MemoryQueue(settings.max_queued)
        secrets = secrets_from(settings.webhooks, environ)
        sender = Sender(settings.webhooks, secrets, app[FETCHER], metrics)
        runner = Runner(
            app, settings, store=store, queue=queue, sender=sender, metrics=metrics
        )
        app[RUNNER] = runner
        app[ACTIVE] = True
        runner.start()
        try:
            yield
        finally:
            await runner.close()
            await store.close()
            if close is not None:
                await close()

    return ctx
