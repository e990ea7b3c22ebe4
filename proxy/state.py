"""The app's typed state: one ``web.AppKey`` per resource.

Each key is set once: the plain ones by ``create_app``, the ones with a lifetime
(opened at start-up, closed at shutdown) by the cleanup context that creates them, all
registered in ``create_app``. A handler or middleware takes the resources it uses from
here and passes them on; nothing below the web layer reads the app.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy.backpressure import Pressure
from proxy.client_keys import KeyRing
from proxy.config import Config
from proxy.dispatch import Services
from proxy.fetch import Fetcher
from proxy.idempotency import Keeper
from proxy.metrics import Metrics
from proxy.pixels import PixelGate
from proxy.pricing import PriceTable
from proxy.quotas import QuotaStore
from proxy.redact import Redactor
from proxy.result_links import ResultLinks
from proxy.routing import Router
from proxy.tempfiles import TempDir
from proxy.upload_backend import FileStore


@dataclass(slots=True)
class Lifecycle:
    # Set on SIGTERM / shutdown: new work is refused, /readyz says so.
    draining: bool = False


# Set by create_app.
CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
CLIENT_KEYS = web.AppKey("client_keys", KeyRing)
PRESSURE = web.AppKey("pressure", Pressure)
PIXELS = web.AppKey("pixels", PixelGate)
OPENAPI = web.AppKey("openapi", bytes)  # the encoded description, built once
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
# Set by cleanup contexts.
TEMP_DIR = web.AppKey("temp_dir", TempDir)  # the request's temp files (app._temp_dir)
PRICES = web.AppKey("prices", PriceTable)  # app._temp_dir, loaded off the loop
ROUTER = web.AppKey("router", Router)  # app._upstreams
# Every provider's credentials, to keep them out of what is relayed or logged.
REDACTOR = web.AppKey("redactor", Redactor)  # app._upstreams
FETCHER = web.AppKey("fetcher", Fetcher)  # fetch.fetch_ctx
QUOTAS = web.AppKey(
    "quotas", QuotaStore
)  # app._quotas: per-key rpm, concurrency, budget
UPLOAD_STORE = web.AppKey("upload_store", FileStore)  # upload_api.store_ctx
# Only with files.backend s3 (upload_api.store_ctx): results as presigned links.
RESULT_LINKS = web.AppKey("result_links", ResultLinks)
# Unless idempotency.enabled is off (idempotency_http.keeper_ctx): Idempotency-Key answers.
IDEMPOTENCY = web.AppKey("idempotency", Keeper)


@dataclass(frozen=True, slots=True)
class Resources:
    """What the request pipeline and its handlers take from the app, gathered once
    the app has started rather than looked up (an aiohttp call each) per request."""

    config: Config
    router: Router
    keys: KeyRing
    prices: PriceTable
    metrics: Metrics
    redactor: Redactor
    temp_dir: TempDir
    links: ResultLinks | None  # RESULT_LINKS, when set
    services: Services  # what a dispatch uses
    pressure: Pressure
    lifecycle: Lifecycle


def gather(app: web.Application) -> Resources:
    return Resources(
        config=app[CONFIG],
        router=app[ROUTER],
        keys=app[CLIENT_KEYS],
        prices=app[PRICES],
        metrics=app[METRICS],
        redactor=app[REDACTOR],
        temp_dir=app[TEMP_DIR],
        links=app.get(RESULT_LINKS),
        services=Services(
            router=app[ROUTER],
            fallbacks=app[CONFIG].fallbacks,
            keys=app[CLIENT_KEYS],
            metrics=app[METRICS],
            pixels=app[PIXELS],
            store=app[UPLOAD_STORE],
            fetcher=app[FETCHER],
        ),
        pressure=app[PRESSURE],
        lifecycle=app[LIFECYCLE],
    )


# Set by create_app's last on_startup hook, after every cleanup context.
RESOURCES = web.AppKey("resources", Resources)


async def keep_resources(app: web.Application) -> None:
    app[RESOURCES] = gather(app)


def resources(app: web.Application) -> Resources:
    try:
        return app[RESOURCES]
    except KeyError:  # a job the runner took while the app was still starting
        return gather(app)
