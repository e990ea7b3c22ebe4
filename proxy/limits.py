"""Per-key request rate, concurrency and spend: the rules, and the in-memory store.

A request is admitted in one atomic step that checks, in order, the daily and monthly
budgets, the requests in the last 60 seconds, and the requests in flight; only when all
pass does it record the request and take a concurrency slot. Spend is added when a
response is priced, so requests already in flight when a budget runs out may overshoot
it by their own cost. Budgets run on UTC days and calendar months. ``proxy.redis_store``
implements the same rules for many replicas.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple, Protocol

from proxy.controls import ClientKey
from proxy.errors import BudgetExceeded, RateLimited

WINDOW_S = 60.0
DAY_S = 86400
MICRO = 1_000_000

Reason = Literal["budget_day", "budget_month", "rpm", "concurrency"]


class Refusal(NamedTuple):
    reason: Reason
    retry_after_s: float
    reset_at: float | None = None  # a budget's next period start, epoch seconds


def month_id(ts: float) -> int:
    d = datetime.fromtimestamp(ts, UTC)
    return d.year * 100 + d.month


def month_reset(month: int) -> float:
    year, mon = divmod(month, 100)
    year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return datetime(year, mon, 1, tzinfo=UTC).timestamp()


def day_reset(day: int) -> float:
    return float((day + 1) * DAY_S)


def micro_usd(usd: float) -> int:
    return round(usd * MICRO)


def refusal_error(name: str, rule: ClientKey, refusal: Refusal) -> RateLimited:
    retry_after = str(max(1, math.ceil(refusal.retry_after_s)))
    headers = {"Retry-After": retry_after}
    if refusal.reason in ("budget_day", "budget_month"):
        daily = refusal.reason == "budget_day"
        budget = rule.budget_usd_day if daily else rule.budget_usd_month
        assert refusal.reset_at is not None
        reset = datetime.fromtimestamp(refusal.reset_at, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        return BudgetExceeded(
            f"the {'daily' if daily else 'monthly'} budget of ${budget:g} for key "
            f"'{name}' is spent; it resets at {reset}",
            code="budget_exceeded",
            headers=headers,
        )
    if refusal.reason == "rpm":
        return RateLimited(
            f"key '{name}' is over its limit of {rule.rpm} requests per minute",
            code="rate_limit_exceeded",
            headers=headers,
        )
    return RateLimited(
        f"key '{name}' already has {rule.concurrency} requests in flight, its limit",
        code="concurrency_limit_exceeded",
        headers=headers,
    )


class LimitStore(Protocol):
    async def admit(self, name: str, rule: ClientKey, lease: str) -> Refusal | None:
        """Check and record one request; a Refusal says why it may not go ahead."""
        ...

    async def release(self, name: str, rule: ClientKey, lease: str) -> None: ...

    async def add_spend(self, name: str, usd: float) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _KeyState:
    hits: deque[float] = field(default_factory=deque)
    inflight: int = 0
    day: tuple[int, int] = (0, 0)  # (day number, micro-USD spent)
    month: tuple[int, int] = (0, 0)  # (yyyymm, micro-USD spent)


class MemoryStore:
    """One process's limits. Every method runs without awaiting, so each is atomic."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    def _state(self, name: str) -> _KeyState:
        return self._keys.setdefault(name, _KeyState())

    async def admit(self, name: str, rule: ClientKey, lease: str) -> Refusal | None:
        now = self._clock()
        st = self._state(name)
        day, month = int(now // DAY_S), month_id(now)
        spent_day = st.day[1] if st.day[0] == day else 0
        spent_month = st.month[1] if st.month[0] == month else 0
        if rule.budget_usd_day is not None and spent_day >= micro_usd(
            rule.budget_usd_day
        ):
            return Refusal("budget_day", day_reset(day) - now, day_reset(day))
        if rule.budget_usd_month is not None and spent_month >= micro_usd(
            rule.budget_usd_month
        ):
            reset = month_reset(month)
            return Refusal("budget_month", reset - now, reset)
        while st.hits and st.hits[0] <= now - WINDOW_S:
            st.hits.popleft()
        if rule.rpm is not None and len(st.hits) >= rule.rpm:
            return Refusal("rpm", st.hits[0] + WINDOW_S - now)
        if rule.concurrency is not None and st.inflight >= rule.concurrency:
            return Refusal("concurrency", 1.0)
        if rule.rpm is not None:
            st.hits.append(now)
        st.inflight += 1
        return None

    async def release(self, name: str, rule: ClientKey, lease: str) -> None:
        st = self._state(name)
        st.inflight = max(0, st.inflight - 1)

    async def add_spend(self, name: str, usd: float) -> None:
        now = self._clock()
        st = self._state(name)
        day, month, amount = int(now // DAY_S), month_id(now), micro_usd(usd)
        st.day = (day, (st.day[1] if st.day[0] == day else 0) + amount)
        st.month = (month, (st.month[1] if st.month[0] == month else 0) + amount)

    async def close(self) -> None:
        self._keys.clear()
