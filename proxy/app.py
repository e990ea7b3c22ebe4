"""``create_app``: routes, middleware, and the lifetime of upstream sessions.

Each resource the handlers need hangs off the app under its own ``AppKey``
(``proxy.state``), set here or by the cleanup context that creates it, all registered
here; there is no module-level mutable state.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiohttp.connector import Connection
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry

from proxy import handlers, upload_api
from proxy.admission import admission
from proxy.backpressure import Pressure
from proxy.catalog import images_models
from proxy.client_keys import KeyRing, ScrapeToken
from proxy.config import Config, provider_keys
from proxy.context import CONTEXT
from proxy.credentials import Auth
from proxy.environment import redis_url
from proxy.fetch import Fetcher, make_ssl_context
from proxy.guard import defer_continue as defer
from proxy.guard import guard
from proxy.idempotency_http import keeper_ctx
from proxy.jobs import routes as jobs
from proxy.logs import ServerLog
from proxy.metrics import Metrics
from proxy.middleware import Handler, observe
from proxy.openapi import build_openapi
from proxy.origins import ORIGINS, OriginPolicy
from proxy.pixels import PixelGate, configure_pillow
from proxy.pricing import PriceTable
from proxy.providers.base import KeyHosts, Pool, resolve_auth
from proxy.providers.registry import build_adapter
from proxy.quotas import MemoryQuotas, QuotaStore
from proxy.quote import images_quote
from proxy.redact import Redactor
from proxy.resilience import CircuitBreaker
from proxy.retirements import startup_warnings
from proxy.routing import Provider, Router
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
    QUOTAS,
    REDACTOR,
    ROUTER,
    TEMP_DIR,
    Lifecycle,
    keep_resources,
)
from proxy.tempfiles import TempDir
from proxy.ui import add_ui_routes, assets_ctx, ui_enabled
from proxy.upstream import Upstream
from proxy.usage import usage

log = logging.getLogger("imagegate")


async def _request_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers the request path chose for every answer (``RequestContext.headers``)."""
    ctx = request.get(CONTEXT)
    if ctx is not None and ctx.headers:
        response.headers.update(ctx.headers)


def create_app(
    config: Config,
    *,
    environ: Mapping[str, str],
    registry: CollectorRegistry | None = None,
    fetch_resolver: AbstractResolver | None = None,
) -> web.Application:
    """``fetch_resolver`` resolves the hosts of client image URLs (tests inject one)."""
    metrics = Metrics(
        registry if registry is not None else CollectorRegistry(),
        multiproc_dir=environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
    )
    # admission first: it decides which requests start in this turn of the loop.
    middlewares: list[Middleware] = [admission, observe, guard]
    # The JSON cap; multipart bodies are streamed and capped by the parser.
    app = web.Application(
        middlewares=middlewares,
        client_max_size=config.limits.max_json_bytes,
        handler_args={"logger": ServerLog(logging.getLogger("aiohttp.server"))},
    )
    limits = config.limits
    configure_pillow(limits.max_image_pixels)
    app[CONFIG] = config
    app[METRICS] = metrics
    app[CLIENT_KEYS] = KeyRing(config.keys)
    app[PRESSURE] = Pressure(config.backpressure, metrics)
    app[PIXELS] = PixelGate(limits.max_image_pixels, limits.max_image_decodes)
    app[OPENAPI] = msgspec.json.encode(build_openapi())
    app[LIFECYCLE] = Lifecycle()
    if not config.keys:
        # Keyless: the provider keys serve whoever reaches us, so not web pages
        # (the guard checks each request against it).
        server = config.server
        app[ORIGINS] = OriginPolicy(
            listen_host=server.host,
            hosts=server.allowed_hosts,
            origins=server.allowed_origins,
        )
    app.on_response_prepare.append(_request_headers)
    app.cleanup_ctx.append(_temp_dir)
    app.cleanup_ctx.append(_upstreams_ctx(dict(environ)))
    app.cleanup_ctx.append(_fetcher_ctx(fetch_resolver))
    app.cleanup_ctx.append(_quotas_ctx(environ))
    app.cleanup_ctx.append(upload_api.store_ctx(environ))
    app.cleanup_ctx.append(jobs.jobs_ctx(environ))  # after the stores it uses
    app.cleanup_ctx.append(keeper_ctx)  # after the store: it may use its bucket
    if ui_enabled(config):
        app.cleanup_ctx.append(assets_ctx)
    app.on_startup.append(keep_resources)  # after every cleanup context
    app.on_shutdown.append(_drain)
    for prefix in ("/v1", "/v3"):
        # 100 Continue waits for the guard's checks (defer_continue).
        app.router.add_post(
            f"{prefix}/images/edits", handlers.images_edits, expect_handler=defer
        )
        app.router.add_post(
            f"{prefix}/images/generations",
            handlers.images_generations,
            expect_handler=defer,
        )
        app.router.add_post(
            f"{prefix}/images/quote", images_quote, expect_handler=defer
        )
        app.router.add_get(f"{prefix}/images/models", images_models)
        # The SDKs' models.list(): the same catalogue in OpenAI's list shape.
        app.router.add_get(f"{prefix}/models", images_models)
    upload_api.add_routes(app)
    if config.jobs.enabled:
        jobs.add_routes(app)  # Prefer: respond-async and /v3/images/jobs
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", _metrics_handler(config, environ))
    app.router.add_get("/openapi.json", handlers.openapi)
    # The browser page and the caller's spend (proxy/ui.py, proxy/usage.py).
    app.router.add_get("/v3/usage", usage)
    add_ui_routes(app, config)
    return app


def _metrics_handler(config: Config, environ: Mapping[str, str]) -> Handler:
    env = config.metrics.token_env
    if env is None:
        return handlers.metrics
    token = ScrapeToken(environ.get(env) or None)
    if not environ.get(env):
        log.warning(
            "metrics.token_env is set but %s is empty: /metrics refuses all", env
        )

    async def metrics(request: web.Request) -> web.StreamResponse:
        token.check(request.headers)
        return await handlers.metrics(request)

    return metrics


async def _drain(app: web.Application) -> None:
    app[LIFECYCLE].draining = True


def _quotas_ctx(
    environ: Mapping[str, str],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        quotas: QuotaStore = MemoryQuotas()
        url = redis_url(config, environ)
        if url is not None:
            from proxy.redis_store import RedisStore

            quotas = RedisStore(url, config.redis, app[METRICS])
        app[QUOTAS] = quotas
        yield
        await quotas.close()

    return ctx


async def _temp_dir(app: web.Application) -> AsyncIterator[None]:
    """The requests' temp files, and the price table (read from disk, so here)."""
    limits, metrics = app[CONFIG].limits, app[METRICS]
    temp_dir = await asyncio.to_thread(
        TempDir,
        limits.temp_dir,
        metrics.temp_bytes,
        memory_budget=limits.spool_total_bytes,
        memory_gauge=metrics.spooled_bytes,
    )
    app[TEMP_DIR] = temp_dir
    app[PRICES] = prices = await asyncio.to_thread(
        PriceTable.load_default, app[CONFIG].catalogue
    )
    if prices.catalogue is not None:
        for warning in startup_warnings(app[CONFIG], prices.catalogue):
            log.warning("%s: requests for it get 410 model_retired", warning)
    yield
    await asyncio.to_thread(temp_dir.remove)


def _fetcher_ctx(
    resolver: AbstractResolver | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The ``Fetcher`` of client image URLs; the system resolver unless one is
    injected."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG].fetch
        own = resolver is None
        used = aiohttp.ThreadedResolver() if resolver is None else resolver
        ssl_context = await make_ssl_context(config.ca_file)
        app[FETCHER] = Fetcher(config, resolver=used, ssl_context=ssl_context)
        try:
            yield
        finally:
            if own:
                await used.close()

    return ctx


class _CountingConnector(aiohttp.TCPConnector):
    """Counts connections created and reused.

    Not an aiohttp TraceConfig: any trace hook makes aiohttp fire every trace signal
    of every request, a few percent of a small edit's CPU.
    """

    def __init__(self, name: str, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._created = metrics.add(metrics.upstream_connections, name, "created")
        self._reused = metrics.add(metrics.upstream_connections, name, "reused")
        self._seen: weakref.WeakSet[object] = weakref.WeakSet()

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[aiohttp.tracing.Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's own signature)
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        protocol = conn.protocol
        if protocol in self._seen:
            self._reused(1)
        elif protocol is not None:
            self._seen.add(protocol)
            self._created(1)
        return conn


UPSTREAM_READ_BUFSIZE = 64 * 1024


def _session(
    name: str, pool: Pool, metrics: Metrics, max_inflight: int
) -> aiohttp.ClientSession:
    connector = _CountingConnector(
        name,
        metrics,
        limit=pool.limit if pool.limit is not None else max_inflight,
        limit_per_host=pool.limit_per_host,
        keepalive_timeout=pool.keepalive_timeout_s,
        ttl_dns_cache=pool.dns_cache_ttl_s,
    )
    timeout = aiohttp.ClientTimeout(
        total=pool.total_timeout_s,
        sock_connect=pool.connect_timeout_s,
        sock_read=pool.read_timeout_s,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        # Upstream replies are ours to interpret; never raise on status.
        raise_for_status=False,
        # One session serves every client: a provider's Set-Cookie kept from one
        # client's reply must not ride on the next client's request.
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        # A reply's buffer pauses its socket at 2 x read_bufsize: aiohttp's default
        # (256 KiB) let 1,000 relayed replies hold up to 768 KiB each (issue 19).
        read_bufsize=UPSTREAM_READ_BUFSIZE,
    )


def _upstreams_ctx(
    environ: dict[str, str],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config, metrics = app[CONFIG], app[METRICS]
        keys = provider_keys(config, environ)
        providers: dict[str, Provider] = {}
        sessions: list[aiohttp.ClientSession] = []
        auths: list[Auth] = []
        try:
            for name, cfg in config.providers.items():
                adapter = build_adapter(cfg)
                auth = resolve_auth(adapter, keys[name], environ)
                if auth is not None:
                    auths.append(auth)
                else:
                    log.warning(
                        "provider has no API key; its requests will fail until %s is set",
                        cfg.api_key_env,
                        extra={"fields": {"provider": name}},
                    )
                session = _session(
                    name, cfg.pool, metrics, config.backpressure.max_inflight
                )
                sessions.append(session)
                upstream = Upstream(
                    name,
                    base_url=cfg.base_url,
                    session=session,
                    auth=auth,
                    key_env=cfg.api_key_env,
                    metrics=metrics,
                    max_response_bytes=config.limits.max_response_bytes,
                    retry=config.retry.for_provider(name),
                    breaker=CircuitBreaker(
                        name,
                        config.breaker.for_provider(name),
                        metrics.circuit_state.labels(name),
                    ),
                    key_hosts=(
                        adapter.key_hosts() if isinstance(adapter, KeyHosts) else ()
                    ),
                )
                providers[name] = Provider(adapter, upstream)
            app[ROUTER] = Router(
                providers, aliases=config.models, allowed=config.allowed_models
            )
            app[REDACTOR] = Redactor(auths)
            metrics.bind_providers(list(providers))
            yield
        finally:
            await asyncio.gather(*(s.close() for s in sessions))

    return ctx
