"""The gateway's typed state, hung off the application under one ``AppKey``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.backpressure import Pressure
from proxy.client_keys import KeyRing
from proxy.config import Config
from proxy.metrics import Metrics
from proxy.pixels import PixelGate
from proxy.pricing import PriceTable
from proxy.quotas import MemoryQuotas, QuotaStore
from proxy.redact import Redactor
from proxy.routing import Router
from proxy.tempfiles import TempDir

if TYPE_CHECKING:
    from proxy.fetch import Fetcher
    from proxy.upload_store import UploadStore


@dataclass
class Gateway:
    config: Config
    metrics: Metrics
    prices: PriceTable = field(default_factory=lambda: PriceTable({}))
    router: Router = field(default_factory=lambda: Router({}))
    temp_dir: TempDir | None = None
    draining: bool = False
    store: UploadStore | None = None  # the upload store behind /v3/upload
    fetcher: Fetcher | None = None
    # The encoded OpenAPI description, built once at start-up.
    openapi: bytes = b""
    quotas: QuotaStore = field(default_factory=MemoryQuotas)
    # Every provider's credentials, to keep them out of what is relayed or logged.
    redactor: Redactor = field(default_factory=Redactor)
    keys: KeyRing = field(init=False)
    pressure: Pressure = field(init=False)
    pixels: PixelGate = field(init=False)

    def __post_init__(self) -> None:
        self.keys = KeyRing(self.config.keys)
        self.pressure = Pressure(self.config.backpressure, self.metrics)
        limits = self.config.limits
        self.pixels = PixelGate(limits.max_image_pixels, limits.max_image_decodes)

    @property
    def files(self) -> TempDir:
        assert self.temp_dir is not None
        return self.temp_dir

    @property
    def temp_path(self) -> str:
        assert self.temp_dir is not None
        return self.temp_dir.path


GATEWAY = web.AppKey("gateway", Gateway)
