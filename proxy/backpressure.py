"""Global admission: requests in flight and multipart bytes headed for temp files.

Beyond either limit a request is answered 503 with Retry-After at once rather than
queued, and ``/readyz`` reports not-ready so a load balancer sends traffic elsewhere.
Temp-file bytes are reserved as they arrive (after gzip inflation), never from what a
client declares: a Content-Length for a body that never comes holds nothing, and a
slow body is cut off by its pace (``proxy.formreader``). One client (its key, or its
address without keys) may hold at most ``max_temp_share`` of the budget, so it cannot
take it all. A lone request is always admitted: its own size is bounded by
``limits.max_body_bytes``.

Slots in flight are shared the same way: once a request's client is known (its key
authenticated, or its address without keys), ``Slot.claim`` counts it against that
client's share, at most ``ceil(max_inflight_share * max_inflight)`` (never fewer than
one), so a few slow clients of one key cannot hold every slot. A request refused there
gives its slot back at once; a request whose key is refused never claims one.
"""

from __future__ import annotations

import contextlib
import math
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

    def claim(self, owner: str) -> None:
        """Count this slot against ``owner``'s share of it; 503 past the share."""
        self._pressure.claim(self, owner)


class Pressure:
    def __init__(self, config: Backpressure, metrics: Metrics) -> None:
        self._config = config
        self._metrics = metrics
        self.inflight = 0
        self.temp_bytes = 0
        self._owners: dict[str, int] = {}  # temp bytes held per client
        self._slots: dict[str, int] = {}  # slots in flight held per client
        # Rounded first: 0.1 x 30 is 3.0000000000000004 in floating point, not 4.
        self.inflight_share = max(
            1, math.ceil(round(config.max_inflight_share * config.max_inflight, 9))
        )

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
            if slot.owner:
                left = self._slots[slot.owner] - 1
                if left:
                    self._slots[slot.owner] = left
                else:
                    del self._slots[slot.owner]

    def claim(self, slot: Slot, owner: str) -> None:
        held = self._slots.get(owner, 0)
        if held >= self.inflight_share:
            raise self._overloaded(
                f"{self.inflight_share} requests in flight for one client"
            )
        self._slots[owner] = held + 1
        slot.owner = owner

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
