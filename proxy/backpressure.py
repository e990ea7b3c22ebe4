"""Global admission: requests in flight and multipart bytes headed for temp files.

Beyond either limit a request is answered 503 with Retry-After at once rather than
queued, and ``/readyz`` reports not-ready so a load balancer sends traffic elsewhere.
Temp-file bytes are reserved from the declared Content-Length (the body cap when none
is declared) before a byte is read, so the disk check costs nothing per chunk. A lone
request is always admitted: its own size is bounded by ``limits.max_body_bytes``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from proxy.controls import Backpressure
from proxy.errors import Overloaded
from proxy.metrics import Metrics


class Pressure:
    def __init__(self, config: Backpressure, metrics: Metrics) -> None:
        self._config = config
        self._metrics = metrics
        self.inflight = 0
        self.temp_bytes = 0

    @property
    def saturated(self) -> bool:
        cfg = self._config
        return (
            self.inflight >= cfg.max_inflight or self.temp_bytes >= cfg.max_temp_bytes
        )

    def _overloaded(self, what: str) -> Overloaded:
        return Overloaded(
            f"the gateway is at its limit of {what}; retry shortly",
            code="overloaded",
            headers={"Retry-After": str(self._config.retry_after_s)},
        )

    @contextlib.contextmanager
    def admit(self, temp_bytes: int) -> Iterator[None]:
        cfg = self._config
        if self.inflight >= cfg.max_inflight:
            raise self._overloaded(f"{cfg.max_inflight} requests in flight")
        if self.temp_bytes and self.temp_bytes + temp_bytes > cfg.max_temp_bytes:
            raise self._overloaded(f"{cfg.max_temp_bytes} bytes of uploads on disk")
        self.inflight += 1
        self.temp_bytes += temp_bytes
        self._metrics.temp_reserved_bytes.set(self.temp_bytes)
        try:
            yield
        finally:
            self.inflight -= 1
            self.temp_bytes -= temp_bytes
            self._metrics.temp_reserved_bytes.set(self.temp_bytes)
