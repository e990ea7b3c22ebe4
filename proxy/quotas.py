"""Per-key request rate, concurrency and spend: the rules, and the in-memory store.

A request is admitted in one atomic step that checks, in order, the daily and monthly
budgets, the requests in the last 60 seconds, and the requests in flight; only when all
pass does it record the request and take a concurrency slot. Before its first upstream
call a budgeted request reserves its worst-case cost (``reserve``): one atomic step adds
it to the spend unless spend plus it would pass a budget. ``settle`` gives reservations
back and adds what the request really cost, so requests in flight cannot together
outspend a budget. Budgets run on UTC days and calendar months. ``proxy.redis_store``
implements the same rules for many replicas.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
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
    # A reservation that did not fit: what it asked and what was left (micro-USD).
    asked: int | None = None
    left: int | None = None


class Reservation(NamedTuple):
    """Micro-USD held against a key's budgets, and the periods that hold it."""

    amount: int
    day: int
    month: int


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
        period = "daily" if daily else "monthly"
        if refusal.asked is not None and refusal.left is not None:
            return BudgetExceeded(
                f"this request may cost up to ${refusal.asked / MICRO:g}, more than the "
                f"${max(refusal.left, 0) / MICRO:g} left of the {period} budget of "
                f"${budget:g} for key '{name}' (spent or held by requests in flight); "
                f"ask for fewer or smaller images, or retry; it resets at {reset}",
                code="budget_exceeded",
                headers=headers,
            )
        return BudgetExceeded(
            f"the {period} budget of ${budget:g} for key "
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


class KeyUsage(NamedTuple):
    """What a key has used, read without changing anything (``GET /v3/usage``)."""

    spent_day: int  # micro-USD this UTC day, holds of requests in flight included
    spent_month: int  # micro-USD this calendar month (UTC), the same
    requests_last_minute: int  # counted only for a key with an rpm limit
    in_flight: int  # counted only for a key with limits (Redis: with concurrency)


class QuotaStore(Protocol):
    async def admit(self, name: str, rule: ClientKey, lease: str) -> Refusal | None:
        """Check and record one request; a Refusal says why it may not go ahead."""
        ...

    async def release(self, name: str, rule: ClientKey, lease: str) -> None: ...

    async def reserve(
        self, name: str, rule: ClientKey, amount: int
    ) -> Reservation | Refusal:
        """Hold ``amount`` micro-USD against the key's budgets if it fits in both."""
        ...

    async def settle(self, name: str, held: Sequence[Reservation], usd: float) -> None:
        """Give ``held`` back and add ``usd``, what the request cost, to the spend."""
        ...

    async def add_spend(self, name: str, usd: float) -> None: ...

    async def usage(self, name: str) -> KeyUsage:
        """The key's spend and counters now; read-only."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _KeyState:
    hits: deque[float] = field(default_factory=deque)
    inflight: int = 0
    day: tuple[int, int] = (0, 0)  # (day number, micro-USD spent)
    month: tuple[int, int] = (0, 0)  # (yyyymm, micro-USD spent)


class MemoryQuotas:
    """One process's quotas. Every method runs without awaiting, so each is atomic."""

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

    async def reserve(
        self, name: str, rule: ClientKey, amount: int
    ) -> Reservation | Refusal:
        # No await between the check and the add: atomic on the event loop.
        now = self._clock()
        st = self._state(name)
        day, month = int(now // DAY_S), month_id(now)
        spent_day = st.day[1] if st.day[0] == day else 0
        spent_month = st.month[1] if st.month[0] == month else 0
        if rule.budget_usd_day is not None:
            left = micro_usd(rule.budget_usd_day) - spent_day
            if amount > left:
                reset = day_reset(day)
                return Refusal("budget_day", reset - now, reset, amount, left)
        if rule.budget_usd_month is not None:
            left = micro_usd(rule.budget_usd_month) - spent_month
            if amount > left:
                reset = month_reset(month)
                return Refusal("budget_month", reset - now, reset, amount, left)
        self._add(st, now, amount)
        return Reservation(amount, day, month)

    async def settle(self, name: str, held: Sequence[Reservation], usd: float) -> None:
        st = self._state(name)
        for r in held:
            # A reservation of a period that has passed is gone with its period.
            if st.day[0] == r.day:
                st.day = (r.day, max(0, st.day[1] - r.amount))
            if st.month[0] == r.month:
                st.month = (r.month, max(0, st.month[1] - r.amount))
        self._add(st, self._clock(), micro_usd(usd))

    async def add_spend(self, name: str, usd: float) -> None:
        self._add(self._state(name), self._clock(), micro_usd(usd))

    async def usage(self, name: str) -> KeyUsage:
        # .get, not _state(): reading must not create an entry for a key.
        st = self._keys.get(name)
        if st is None:
            return KeyUsage(0, 0, 0, 0)
        now = self._clock()
        day, month = int(now // DAY_S), month_id(now)
        return KeyUsage(
            spent_day=st.day[1] if st.day[0] == day else 0,
            spent_month=st.month[1] if st.month[0] == month else 0,
            # admit() drops hits as old as the window; the same cut, without the drop.
            requests_last_minute=sum(1 for t in st.hits if t > now - WINDOW_S),
            in_flight=st.inflight,
        )

    @staticmethod
    def _add(st: _KeyState, now: float, amount: int) -> None:
        day, month = int(now // DAY_S), month_id(now)
        st.day = (day, (st.day[1] if st.day[0] == day else 0) + amount)
        st.month = (month, (st.month[1] if st.month[0] == month else 0) + amount)

    async def close(self) -> None:
        self._keys.clear()
