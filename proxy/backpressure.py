"""Global admission: requests in flight, multipart bytes headed for temp files, and
JSON bodies held in memory.

Beyond any limit a request is answered 503 with Retry-After at once rather than
queued (its body is not read further, only discarded after the answer:
``proxy.admission``), and ``/readyz`` reports not-ready so a load balancer sends
traffic elsewhere. Requests waiting to start (``StartGate``: at most
``STARTS_PER_TURN`` start per turn of the loop) count as in flight, so the one past
``max_inflight`` is refused at its head, not after their wait.

Body bytes are reserved as they arrive (after gzip inflation), never from what a
client declares: a Content-Length for a body that never comes holds nothing, and a
slow body is cut off by its pace (``proxy.formreader``).
Multipart bytes count against ``max_temp_bytes``; JSON bodies, which are held and
decoded in memory, against ``max_json_memory_bytes`` at ``JSON_FACTOR`` times their
size (the body and the decoded strings live side by side). One client (its key, or
its address without keys) may hold at most ``max_temp_share`` of either budget, so it
cannot take it all. A lone request is always admitted: its own size is bounded by
``limits.max_body_bytes`` or ``limits.max_json_bytes``.

Slots in flight are shared the same way: once a request's client is known (its key
authenticated, or its address without keys), ``Slot.claim`` counts it against that
client's share, at most ``ceil(max_inflight_share * max_inflight)`` (never fewer than
one), so a few slow clients of one key cannot hold every slot. A request refused there
gives its slot back at once; a request whose key is refused never claims one.
"""

from __future__ import annotations

import asyncio
import math

from proxy.controls import Backpressure
from proxy.errors import Overloaded
from proxy.metrics import Metrics, setter
from proxy.turns import StartGate

# Bytes reserved per JSON body byte: the body itself plus what msgspec decodes from it
# (strings of the same length: data URLs are ASCII). The decoded images (3/4 of their
# base64) are made after the body is dropped. Tested: tests/integration/test_json_bounds.py.
JSON_FACTOR = 2
# Requests starting per turn of the loop (``proxy.admission``): a start is ~0.3-0.5 ms
# of CPU for an upload (its first chunks parsed), so a turn of starts stays near
# 10-15 ms and a burst of 1,000 starts over ~30 turns, I/O and probes served between.
STARTS_PER_TURN = 32


class _Pool:
    """One budget of bytes, with its per-client share."""

    __slots__ = ("cap", "owners", "share", "used", "what")

    def __init__(self, cap: int, share: float, what: str) -> None:
        self.cap = cap
        self.share = int(cap * share)
        self.what = what
        self.used = 0
        self.owners: dict[str, int] = {}  # bytes held per client


class Slot:
    """One admitted request: its place in flight and the bytes it holds."""

    __slots__ = ("_pressure", "held", "json_held", "owner")

    def __init__(self, pressure: Pressure) -> None:
        self._pressure = pressure
        self.owner = ""  # the client key's name, or the peer's address; set once known
        self.held = 0  # temp bytes
        self.json_held = 0  # JSON bytes (times JSON_FACTOR)

    @property
    def json(self) -> JsonReserve:
        # Made when asked, not kept: a slot and its reserve pointing at each other
        # left one garbage cycle per request for the collector (measurable at c=32).
        return JsonReserve(self)

    def take(self, count: int) -> None:
        """Reserve ``count`` more multipart bytes received; 503 if refused."""
        self.held = self._pressure.take(self._pressure.temp, self, self.held, count)

    def claim(self, owner: str) -> None:
        """Count this slot against ``owner``'s share of it; 503 past the share."""
        self._pressure.claim(self, owner)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pressure._leave(self)


class JsonReserve:
    """Where a request's JSON body bytes are reserved (``JSON_FACTOR`` each)."""

    __slots__ = ("slot",)

    def __init__(self, slot: Slot) -> None:
        self.slot = slot

    def take(self, count: int) -> None:
        slot = self.slot
        pressure = slot._pressure
        slot.json_held = pressure.take(
            pressure.json, slot, slot.json_held, count * JSON_FACTOR
        )


class Pressure:
    def __init__(self, config: Backpressure, metrics: Metrics) -> None:
        self._config = config
        self._metrics = metrics
        metrics.inflight_limit.set(config.max_inflight)
        self._temp_gauge = setter(metrics.temp_reserved_bytes)
        self._json_gauge = setter(metrics.json_reserved_bytes)
        self.inflight = 0
        # Requests queued to start (``proxy.admission``), counted as in flight so that
        # one behind them is refused at its head rather than after their wait.
        self.waiting = 0
        self.starts = StartGate(STARTS_PER_TURN)
        # Pieces of providers' replies relayed per turn of the loop
        # (``proxy.passthrough``): when 1,000 replies of 1.5 MB arrived together,
        # every relay stepped in the same turn (up to 553 ms of CPU, issue 19). A
        # piece past them waits unprocessed for a later turn, so aiohttp pauses its
        # upstream socket once the buffer behind it fills (and stops that socket's
        # read timer: the wait is the proxy's, not the provider's).
        self.relays = StartGate(config.relay_steps_per_turn)
        # Turns at handling request body chunks (``BodyStream.read``): each socket
        # delivering data costs the loop a callback and a task step per turn of the
        # loop, and with 1,000 uploads arriving at once one turn took up to 282 ms of
        # CPU (issue 19), with /healthz and 503s waiting behind it. Beyond these
        # turns a chunk waits unprocessed, so aiohttp pauses its socket once its
        # buffer is full. A turn is never held while waiting for the client: a
        # dripping client cannot keep others' uploads waiting.
        self.readers = asyncio.Semaphore(config.max_body_reads)
        share = config.max_temp_share
        self.temp = _Pool(config.max_temp_bytes, share, "bytes of uploads on disk")
        self.json = _Pool(
            config.max_json_memory_bytes, share, "bytes of JSON bodies in memory"
        )
        self._slots: dict[str, int] = {}  # slots in flight held per client
        # Rounded first: 0.1 x 30 is 3.0000000000000004 in floating point, not 4.
        self.inflight_share = max(
            1, math.ceil(round(config.max_inflight_share * config.max_inflight, 9))
        )

    def room(self) -> bool:
        """Whether one more request may be in flight (the queued ones counted)."""
        return self.inflight + self.waiting < self._config.max_inflight

    @property
    def saturated(self) -> bool:
        return (
            not self.room()
            or self.temp.used >= self.temp.cap
            or self.json.used >= self.json.cap
        )

    def _overloaded(self, what: str) -> Overloaded:
        return Overloaded(
            f"the gateway is at its limit of {what}; retry shortly",
            code="overloaded",
            headers={"Retry-After": str(self._config.retry_after_s)},
        )

    def admit(self) -> Slot:
        """A place in flight, used as ``with pressure.admit() as slot``: leaving the
        block gives it back with what it holds (the slot is its own context manager,
        cheaper than a generator's). 503 past ``max_inflight``."""
        cfg = self._config
        if not self.room():
            raise self._overloaded(f"{cfg.max_inflight} requests in flight")
        self.inflight += 1
        return Slot(self)

    def _leave(self, slot: Slot) -> None:
        """What leaving ``admit``'s block gives back."""
        self.inflight -= 1
        if slot.held:
            self._give_back(self.temp, slot.owner, slot.held)
            slot.held = 0
        if slot.json_held:
            self._give_back(self.json, slot.owner, slot.json_held)
            slot.json_held = 0
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

    def take(self, pool: _Pool, slot: Slot, held: int, count: int) -> int:
        """Reserve ``count`` bytes of ``pool`` for ``slot`` (holding ``held``); the
        new holding, or a 503 if the budget or the client's share cannot give them."""
        total = pool.used + count
        if pool.used > held and total > pool.cap:
            raise self._overloaded(f"{pool.cap} {pool.what}")
        owned = pool.owners.get(slot.owner, 0)
        if owned > held and owned + count > pool.share:
            # The client's other requests already hold bytes: this one would take it
            # past its share of the budget.
            raise self._overloaded(f"{pool.share} {pool.what} for one client")
        pool.owners[slot.owner] = owned + count
        pool.used = total
        self._gauge(pool)
        return held + count

    def _give_back(self, pool: _Pool, owner: str, held: int) -> None:
        left = pool.owners[owner] - held
        if left:
            pool.owners[owner] = left
        else:
            del pool.owners[owner]
        pool.used -= held
        self._gauge(pool)

    def _gauge(self, pool: _Pool) -> None:
        if pool is self.temp:
            self._temp_gauge(pool.used)
        else:
            self._json_gauge(pool.used)
