"""Running jobs: ``jobs.workers`` tasks per process take jobs from the queue and run
each through the synchronous pipeline (``proxy.pipeline``), so a job's result is the
bytes the synchronous call answers.

A job counts against its key's quotas when it runs, not when it was accepted: it is
admitted like a request (rpm and concurrency refusals wait their turn; a budget
refusal fails the job with the 429 envelope) and its budget hold reserves and settles
as a request's does. While it runs, its claim on the queue entry is renewed and its
record watched: a cancellation (``DELETE``, on any replica) cancels the run, and the
upstream call given up is charged its worst case to the budget, as a request whose
client left is (``proxy.budget``): the provider may finish and bill it. Once the job
ended, its stored inputs are deleted, its webhook delivered (``proxy.jobs.webhooks``)
and only then is its queue entry acknowledged, so a replica that dies before that
leaves the job, or its delivery, to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import msgspec
from aiohttp import web

from proxy import held, pipeline
from proxy.budget import Hold
from proxy.context import CURRENT, RequestContext
from proxy.controls import ClientKey
from proxy.errors import Forbidden, ProxyError
from proxy.guard import limited
from proxy.jobs.config import Jobs
from proxy.jobs.inputs import discard, restore, stored_ids
from proxy.jobs.metrics import JobMetrics
from proxy.jobs.queue import Delivery, JobQueue
from proxy.jobs.records import TERMINAL, JobRecord, rebuild, view_parts
from proxy.jobs.store import JobStore
from proxy.jobs.webhooks import Sender
from proxy.logs import log_access
from proxy.quotas import refusal_error
from proxy.redact import error_detail
from proxy.state import (
    CLIENT_KEYS,
    CONFIG,
    LIFECYCLE,
    METRICS,
    PRICES,
    QUOTAS,
    REDACTOR,
    RESULT_LINKS,
    TEMP_DIR,
    UPLOAD_STORE,
    resources,
)
from proxy.tasks import TaskGroup
from proxy.tempfiles import UploadSet

log = logging.getLogger("imagegate")
ROUTE = "/v3/images/jobs"
_MAX_WAIT_S = 30.0  # the longest pause before asking the quotas again


class Runner:
    def __init__(
        self,
        app: web.Application,
        config: Jobs,
        *,
        store: JobStore,
        queue: JobQueue,
        sender: Sender,
        metrics: JobMetrics,
    ) -> None:
        self._app = app
        self._config = config
        self.store = store
        self.queue = queue
        self.sender = sender
        self.metrics = metrics
        self._tasks = TaskGroup()
        self._running: dict[str, asyncio.Task[JobRecord | None]] = {}
        self._cancelled: set[str] = set()

    def start(self) -> None:
        for i in range(self._config.workers):
            self._tasks.spawn(self._worker(), name=f"job-worker-{i}")
        self._tasks.spawn(self._gauges(), name="job-gauges")

    async def close(self) -> None:
        """At shutdown: the jobs running get ``server.shutdown_timeout_s`` to end (a
        job run again elsewhere may be billed twice); then what is left is
        cancelled, its claim left to expire for another replica."""
        running = list(self._running.values())
        if running:
            grace = self._app[CONFIG].server.shutdown_timeout_s
            await asyncio.wait(running, timeout=grace)
        await self._tasks.close()

    def cancel_here(self, job_id: str) -> None:
        """Cancel the job's run at once if this process runs it (else the replica
        running it sees the record within ``jobs.poll_s``)."""
        task = self._running.get(job_id)
        if task is not None:
            self._cancelled.add(job_id)
            task.cancel()

    async def _gauges(self) -> None:
        while True:
            with contextlib.suppress(ProxyError):
                depth, age = await self.queue.depth()
                self.metrics.queue_depth.set(depth)
                self.metrics.queue_age.set(age)
            await asyncio.sleep(min(5.0, self._config.poll_s * 5))

    async def _worker(self) -> None:
        lifecycle = self._app[LIFECYCLE]
        while not lifecycle.draining:  # shutting down: no new job (see close)
            try:
                delivery = await self.queue.receive()
            except ProxyError:
                log.warning("jobs: the queue (Redis) did not answer; retrying")
                await asyncio.sleep(1.0)
                continue
            try:
                await self._handle(delivery)
            except ProxyError:
                # The entry stays claimed: it is taken again once its lease expires.
                log.warning("jobs: the job store failed mid-job; the job is retried")
            except Exception:
                log.exception("jobs: unexpected error", extra={"fields": {}})

    async def _handle(self, delivery: Delivery) -> None:
        record = await self.store.get(delivery.job_id)
        if (
            record is not None
            and record.state == "in_progress"
            and record.attempts >= self._config.max_attempts
        ):
            record = await self._abandon(record)
        if record is not None and record.state not in TERMINAL:
            started = msgspec.structs.replace(
                record,
                state="in_progress",
                attempts=record.attempts + 1,
                started_at=int(time.time()),
            )
            if await self.store.transition(started, ("queued", "in_progress")):
                self.metrics.jobs.labels("in_progress").inc()
                record = await self._run(delivery, started)
            else:
                record = await self.store.get(delivery.job_id)
        if record is None:  # expired
            await self.queue.ack(delivery)
            return
        if record.state not in TERMINAL:
            return  # a job store failure: left claimed, retried after the lease
        await discard(self._app[UPLOAD_STORE], stored_ids(record), record.key)
        if record.webhook != "pending" or record.webhook_url is None:
            await self.queue.ack(delivery)
            return
        await self.sender.slots.acquire()
        self._tasks.spawn(self._deliver(delivery, record), name="job-webhook")

    async def _abandon(self, record: JobRecord) -> JobRecord | None:
        """Fail a job whose runs all ended with their replica (a job that brings its
        replica down would otherwise run, and cost, forever)."""
        exc = ProxyError(
            f"the job was started {record.attempts} times and each time the replica "
            "running it stopped; it is not run again",
            code="job_abandoned",
        )
        detail = error_detail(exc, self._app[REDACTOR])
        failed = msgspec.structs.replace(
            record,
            state="failed",
            status_code=exc.status,
            error=msgspec.to_builtins(detail),
            completed_at=int(time.time()),
        )
        if await self.store.transition(failed, ("in_progress",)):
            self.metrics.jobs.labels("failed").inc()
            return failed
        return await self.store.get(record.id)

    async def _run(self, delivery: Delivery, record: JobRecord) -> JobRecord | None:
        task = self._tasks.spawn(self._execute(record), name="job-run")
        self._running[record.id] = task
        watch = self._tasks.spawn(self._watch(delivery, task), name="job-watch")
        try:
            return await task
        except asyncio.CancelledError:
            if record.id not in self._cancelled:
                raise  # shutdown: the entry stays claimed, for another replica
            return await self.store.get(record.id)
        finally:
            self._running.pop(record.id, None)
            self._cancelled.discard(record.id)
            watch.cancel()

    async def _watch(self, delivery: Delivery, task: asyncio.Task[object]) -> None:
        """Renew the claim every lease_s / 3; cancel the run if the job was."""
        renew_every = self._config.lease_s / 3
        renewed = time.monotonic()
        while not task.done():
            await asyncio.sleep(min(self._config.poll_s, renew_every))
            with contextlib.suppress(ProxyError):
                if time.monotonic() - renewed >= renew_every:
                    await self.queue.renew(delivery)
                    renewed = time.monotonic()
                record = await self.store.get(delivery.job_id)
                if record is not None and record.state == "cancelled":
                    self.cancel_here(delivery.job_id)

    async def _keepalive(self, delivery: Delivery) -> None:
        while True:
            await asyncio.sleep(self._config.lease_s / 3)
            with contextlib.suppress(ProxyError):
                await self.queue.renew(delivery)

    async def _deliver(self, delivery: Delivery, record: JobRecord) -> None:
        keepalive = self._tasks.spawn(self._keepalive(delivery), name="job-lease")
        try:
            assert record.webhook_url is not None
            body = await held.joined(
                view_parts(record, await self.store.result(record.id))
            )
            ok = await self.sender.deliver(
                record.webhook_url, record.owner, record.id, body
            )
            done = msgspec.structs.replace(
                record, webhook="delivered" if ok else "failed"
            )
            await self.store.transition(done, (record.state,))
            await self.queue.ack(delivery)
        except ProxyError:
            log.warning("jobs: webhook state not saved; delivered again later")
        finally:
            keepalive.cancel()
            self.sender.slots.release()

    async def _execute(self, record: JobRecord) -> JobRecord | None:
        """Run the job; its terminal record, or None if another replica ended it."""
        app = self._app
        ctx = RequestContext(request_id=record.id, route=ROUTE, key=record.owner)
        CURRENT.set(ctx)  # for Upstream, inside the adapters (proxy.context)
        began = time.monotonic()
        result = None
        try:
            result, provider, cost = await self._pipeline(record, ctx)
            final = msgspec.structs.replace(
                record,
                state="succeeded",
                status_code=200,
                provider=provider,
                cost=cost,
                completed_at=int(time.time()),
            )
        except ProxyError as exc:
            app[METRICS].record_error(exc)
            ctx.error_code = app[REDACTOR].text(exc.log_code)
            detail = error_detail(exc, app[REDACTOR])
            final = msgspec.structs.replace(
                record,
                state="failed",
                status_code=exc.status,
                error=msgspec.to_builtins(detail),
                provider=ctx.provider,
                completed_at=int(time.time()),
            )
        except Exception:
            log.exception("jobs: job failed", extra={"fields": {"job": record.id}})
            internal = ProxyError(
                f"internal error; job {record.id}", code="internal_error"
            )
            detail = error_detail(internal, app[REDACTOR])
            final = msgspec.structs.replace(
                record,
                state="failed",
                status_code=500,
                error=msgspec.to_builtins(detail),
                completed_at=int(time.time()),
            )
        if app[CONFIG].server.access_log:
            _log_run(ctx, final, time.monotonic() - began)
        if await self.store.transition(final, ("in_progress",), result=result):
            self.metrics.jobs.labels(final.state).inc()
            return final
        return await self.store.get(record.id)

    async def _pipeline(
        self, record: JobRecord, ctx: RequestContext
    ) -> tuple[bytes, str, float | None]:
        app = self._app
        keys, quotas = app[CLIENT_KEYS], app[QUOTAS]
        rule = None
        if keys and record.key is not None:
            if record.key not in keys.names:
                raise Forbidden(
                    f"key '{record.key}' that made this job is no longer configured",
                    code="key_removed",
                )
            rule = keys[record.key]
        lease: str | None = None
        if rule is not None and limited(rule):
            lease = uuid.uuid4().hex
            await self._admit(record.owner, rule, lease)
        hold = None
        if rule is not None and (
            rule.budget_usd_day is not None or rule.budget_usd_month is not None
        ):
            limits = app[CONFIG].limits
            hold = Hold(
                quotas, record.owner, rule, app[PRICES], limits.unpriced_image_usd
            )
        ctx.hold = hold
        try:
            async with UploadSet(app[TEMP_DIR]) as uploads:
                images, mask = await restore(app[UPLOAD_STORE], record, uploads)
                job = rebuild(record, images, mask)
                ctx.prompt = job.prompt
                res = resources(app)
                route = pipeline.route_for(res, ctx, record.model)
                links = app.get(RESULT_LINKS) if record.links else None
                answer = await pipeline.run(
                    res, route, job, key=record.key, hold=hold, uploads=uploads,
                    ctx=ctx,
                )  # fmt: skip
                answered, result, cost = await pipeline.finish(
                    res, ctx, route, job, answer, links
                )
                return (
                    # A large result joined in a worker thread (held.joined).
                    await held.joined(pipeline.json_parts(answered, result, cost)),
                    answered.provider,
                    cost,
                )
        finally:
            if lease is not None and rule is not None:
                await quotas.release(record.owner, rule, lease)
            if hold is not None:
                await hold.settle()

    async def _admit(self, name: str, rule: ClientKey, lease: str) -> None:
        """Admitted as a request is; rpm and concurrency refusals wait their turn."""
        quotas = self._app[QUOTAS]
        while True:
            refusal = await quotas.admit(name, rule, lease)
            if refusal is None:
                return
            if refusal.reason in ("budget_day", "budget_month"):
                raise refusal_error(name, rule, refusal)
            await asyncio.sleep(min(max(refusal.retry_after_s, 0.05), _MAX_WAIT_S))


def _log_run(ctx: RequestContext, record: JobRecord, elapsed: float) -> None:
    """The run's access-log line: the request's fields, ``route`` the jobs route and
    ``request_id`` the job's id."""
    log_access(
        {
            "request_id": ctx.request_id,
            "route": ctx.route,
            "status": record.status_code,
            "key": ctx.key,
            "provider": ctx.provider,
            "model": ctx.model,
            "duration_s": round(elapsed, 6),
            "upstream_s": round(ctx.upstream_s, 6),
            "cost_usd": ctx.cost,
            "images": ctx.images,
            "error": ctx.error_code,
            "attempt": record.attempts,
        }
    )
