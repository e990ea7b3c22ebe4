"""``create_app``: routes, middleware, and the lifetime of upstream sessions.

Everything the handlers need hangs off one typed ``Gateway`` under an ``AppKey``; there
is no module-level mutable state.
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
from proxy.catalog import images_models
from proxy.client_keys import ScrapeToken
from proxy.config import Config, provider_keys
from proxy.credentials import Auth
from proxy.fetch import fetch_ctx
from proxy.guard import defer_continue as defer
from proxy.guard import guard
from proxy.logs import ServerLog
from proxy.metrics import Metrics
from proxy.middleware import Handler, observe
from proxy.openapi import build_openapi
from proxy.origins import OriginPolicy, same_origin
from proxy.pixels import configure_pillow
from proxy.pricing import PriceTable
from proxy.providers.base import KeyHosts, Pool, resolve_auth
from proxy.providers.registry import build_adapter
from proxy.redact import Redactor
from proxy.resilience import CircuitBreaker
from proxy.routing import Provider, Router
from proxy.state import GATEWAY, Gateway
from proxy.tempfiles import TempDir
from proxy.ui import add_ui_routes
from proxy.upstream import Upstream
from proxy.usage import usage

log = logging.getLogger("imagegate")


def create_app(
    config: Config,
    *,
    environ: Mapping[str, str],
    registry: CollectorRegistry | None = None,
    fetch_resolver: AbstractResolver | None = None,
) -> web.Application:
    """``fetch_resolver`` resolves the hosts of client image URLs (tests inject one)."""
    gateway = Gateway(
        config=config,
        metrics=Metrics(
            registry if registry is not None else CollectorRegistry(),
            multiproc_dir=environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
        ),
    )
    middlewares: list[Middleware] = [observe, guard]
    if not config.keys:
        # Keyless: the provider keys serve whoever reaches us, so not web pages.
        server = config.server
        policy = OriginPolicy(
            listen_host=server.host,
            hosts=server.allowed_hosts,
            origins=server.allowed_origins,
        )
        middlewares.insert(1, same_origin(policy))
    # The JSON cap; multipart bodies are streamed and capped by the parser.
    app = web.Application(
        middlewares=middlewares,
        client_max_size=config.limits.max_json_bytes,
        handler_args={"logger": ServerLog(logging.getLogger("aiohttp.server"))},
    )
    gateway.openapi = msgspec.json.encode(build_openapi())
    configure_pillow(config.limits.max_image_pixels)
    app[GATEWAY] = gateway
    app.cleanup_ctx.append(_files)
    app.cleanup_ctx.append(_upstreams_ctx(dict(environ)))
    app.cleanup_ctx.append(fetch_ctx(fetch_resolver))
    app.cleanup_ctx.append(_limits)
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
        app.router.add_get(f"{prefix}/images/models", images_models)
        # The SDKs' models.list(): the same catalogue in OpenAI's list shape.
        app.router.add_get(f"{prefix}/models", images_models)
    upload_api.add_routes(app, environ)
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
    app[GATEWAY].draining = True


async def _limits(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    config = gateway.config
    if config.redis_url is not None:
        from proxy.redis_store import RedisStore

        gateway.quotas = RedisStore(config.redis_url, config.redis, gateway.metrics)
    yield
    await gateway.quotas.close()


async def _files(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    limits, metrics = gateway.config.limits, gateway.metrics
    gateway.temp_dir = await asyncio.to_thread(
        TempDir,
        limits.temp_dir,
        metrics.temp_bytes,
        memory_budget=limits.spool_total_bytes,
        memory_gauge=metrics.spooled_bytes,
    )
    gateway.prices = await asyncio.to_thread(PriceTable.load_default)
    yield
    await asyncio.to_thread(gateway.temp_dir.remove)


class _CountingConnector(aiohttp.TCPConnector):
    """Counts connections created and reused.

    Not an aiohttp TraceConfig: any trace hook makes aiohttp fire every trace signal
    of every request, a few percent of a small edit's CPU.
    """

    def __init__(self, name: str, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._created = metrics.upstream_connections.labels(name, "created")
        self._reused = metrics.upstream_connections.labels(name, "reused")
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
            self._reused.inc()
        elif protocol is not None:
            self._seen.add(protocol)
            self._created.inc()
        return conn


def _session(name: str, pool: Pool, metrics: Metrics) -> aiohttp.ClientSession:
    connector = _CountingConnector(
        name,
        metrics,
        limit=pool.limit,
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
    )


def _upstreams_ctx(
    environ: dict[str, str],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        gateway = app[GATEWAY]
        config = gateway.config
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
                session = _session(name, cfg.pool, gateway.metrics)
                sessions.append(session)
                upstream = Upstream(
                    name,
                    base_url=cfg.base_url,
                    session=session,
                    auth=auth,
                    key_env=cfg.api_key_env,
                    metrics=gateway.metrics,
                    max_response_bytes=config.limits.max_response_bytes,
                    retry=config.retry.for_provider(name),
                    breaker=CircuitBreaker(
                        name,
                        config.breaker.for_provider(name),
                        gateway.metrics.circuit_state.labels(name),
                    ),
                    key_hosts=(
                        adapter.key_hosts() if isinstance(adapter, KeyHosts) else ()
                    ),
                )
                providers[name] = Provider(adapter, upstream)
            gateway.router = Router(
                providers, aliases=config.models, allowed=config.allowed_models
            )
            gateway.redactor = Redactor(auths)
            gateway.metrics.bind_providers(list(providers))
            yield
        finally:
            await asyncio.gather(*(s.close() for s in sessions))

    return ctx
