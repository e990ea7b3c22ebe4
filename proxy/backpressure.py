"""Global admission: requests in flight and multipart bytes headed for temp files.

Beyond either limit a request is answered 503 with Retry-After at once rather than
queued, and ``/readyz`` reports not-ready so a load balancer sends traffic elsewhere.
Temp-file bytes are reserved as they arrive (after gzip inflation), never from what a
client declares: a Content-Length for a body that never comes holds nothing, and a
slow body is cut off by its pace (``proxy.formreader``). One client (its key, or its
address without keys) may hold at most ``max_temp_share`` of the budget, so it cannot
take it all. A lone request is always admitted: its own size is bounded by
``limits.max_body_bytes``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from proxy.controls import Backpressure
from proxy.errors import Overloaded
from proxy.metrics import Metrics


class Slot:
    """One admitted request: its place in flight and the temp bytes it holds."""

    __slots__ = ("_pressure", "held", "owner")

    def __init__(self, pressure: Pressure) -> None:
        self._pressure = pressure
        self.owner = ""  # the client key's name, or the peer's address; set once known
        self.held = 0

    def take(self, count: int) -> None:
        """Reserve ``count`` more bytes received; 503 if the budget cannot give them."""
        self._pressure.take(self, count)


class Pressure:
    def __init__(self, config: Backpressure, metrics: Metrics) -> None:
        self._config = config
        self._metrics = metrics
        self.inflight = 0
        self.temp_bytes = 0
        self._owners: dict[str, int] = {}  # temp bytes held per client

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
    def admit(self) -> Iterator[Slot]:
        cfg = self._config
        if self.inflight >= cfg.max_inflight:
            raise self._overloaded(f"{cfg.max_inflight} requests in flight")
        self.inflight += 1
        slot = Slot(self)
        try:
            yield slot
        finally:
            self.inflight -= 1
            if slot.held:
                self._give_back(slot)

    def take(self, slot: Slot, count: int) -> None:
        cfg = self._config
        total = self.temp_bytes + count
        if self.temp_bytes > slot.held and total > cfg.max_temp_bytes:
            raise self._overloaded(f"{cfg.max_temp_bytes} bytes of uploads on disk")
        owned = self._owners.get(slot.owner, 0)
        share = int(cfg.max_temp_bytes * cfg.max_temp_share)
        if owned > slot.held and owned + count > share:
            # The client's other requests already hold bytes: this one would take it
            # past its share of the budget.
            raise self._overloaded(f"{share} bytes of uploads on disk for one client")
        slot.held += count
        self._owners[slot.owner] = owned + count
        self.temp_bytes = total
        self._metrics.temp_reserved_bytes.set(total)

    def _give_back(self, slot: Slot) -> None:
        left = self._owners[slot.owner] - slot.held
        if left:
            self._owners[slot.owner] = left
        else:
            del self._owners[slot.owner]
        self.temp_bytes -= slot.held
        slot.held = 0
        self._metrics.temp_reserved_bytes.set(self.temp_bytes)
