"""Retry timing and the per-provider circuit breaker; ``Upstream`` applies both.

What is safe to retry is decided in ``Upstream``: a connection that was never made, and
a 429 or 503 reply whose Retry-After is within ``retry.max_retry_after_s``. Both mean
the provider did no work, so nothing can have been billed. Anything after the request
left (a read timeout, a reset, a 500) is never retried here; fallbacks may still move it
to another provider.

The breaker counts consecutive failed calls (5xx, timeouts, unreachable). At
``breaker.failures`` it opens: calls fail at once with ``CircuitOpen`` until
``breaker.cooldown_s`` has passed; then one probe call is let through (half-open), and
its outcome closes the circuit or opens it for another cool-down.
"""

from __future__ import annotations

import enum
import math
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import msgspec
from prometheus_client import Gauge

from proxy.config_base import ConfigBase, NonNegSeconds, PositiveInt, Seconds
from proxy.errors import CircuitOpen

RETRY_STATUSES = frozenset({429, 503})


class RetryPolicy(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """Only what cannot have been billed is retried (see the module docstring)."""

    attempts: PositiveInt = 3  # tries in all, the first included
    backoff_base_s: Seconds = 0.25
    backoff_max_s: Seconds = 4.0
    # A Retry-After longer than this goes to a fallback or back to the client instead:
    # short waits absorb a blip, long ones are the client's call.
    max_retry_after_s: NonNegSeconds = 2.0
    # No new try starts after this long from the first.
    deadline_s: Seconds = 30.0


class Retry(RetryPolicy, frozen=True, forbid_unknown_fields=True):
    providers: dict[str, RetryPolicy] = msgspec.field(default_factory=dict)

    def for_provider(self, name: str) -> RetryPolicy:
        return self.providers.get(name, self)


class BreakerPolicy(ConfigBase, frozen=True, forbid_unknown_fields=True):
    failures: PositiveInt = 5  # consecutive failures that open the circuit
    cooldown_s: Seconds = 30.0  # open this long before one probe is let through


class Breaker(BreakerPolicy, frozen=True, forbid_unknown_fields=True):
    providers: dict[str, BreakerPolicy] = msgspec.field(default_factory=dict)

    def for_provider(self, name: str) -> BreakerPolicy:
        return self.providers.get(name, self)


def retry_after_s(value: str | None, *, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def backoff_s(policy: RetryPolicy, retry: int, rng: random.Random) -> float:
    """Full jitter: uniform over [0, min(max, base * 2**retry)] (retry counts from 0)."""
    return rng.uniform(0, min(policy.backoff_max_s, policy.backoff_base_s * 2**retry))


class State(enum.IntEnum):
    # The values of imagegate_circuit_state (proxy.metrics.CIRCUIT_STATES).
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        provider: str,
        policy: BreakerPolicy,
        gauge: Gauge,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self._policy = policy
        self._gauge = gauge
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = State.CLOSED
        gauge.set(State.CLOSED)

    def _set(self, state: State) -> None:
        self.state = state
        self._gauge.set(state)

    def before(self) -> None:
        """Let a call through or raise CircuitOpen; a call let through must settle."""
        if self.state is State.CLOSED:
            return
        remaining = self._opened_at + self._policy.cooldown_s - self._clock()
        if self.state is State.OPEN and remaining <= 0:
            self._set(State.HALF_OPEN)
        if self.state is State.HALF_OPEN and not self._probing:
            self._probing = True
            return
        raise CircuitOpen(
            f"provider '{self.provider}' is failing; its circuit is open, "
            "calls are not sent",
            provider=self.provider,
            code="circuit_open",
            headers={"Retry-After": str(max(1, math.ceil(remaining)))},
        )

    def success(self) -> None:
        self._failures = 0
        self._probing = False
        if self.state is not State.CLOSED:
            self._set(State.CLOSED)

    def failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self.state is State.HALF_OPEN or self._failures >= self._policy.failures:
            self._opened_at = self._clock()
            self._set(State.OPEN)

    def neutral(self) -> None:
        """The call said nothing about the provider's health (429, cancelled)."""
        self._probing = False
