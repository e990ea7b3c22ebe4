"""``GET /v3/usage``: the calling key's own spend and counters, against its limits.

The key is the one the request presents (``guard`` has already admitted it), so a
caller reads its own key and no other: nothing in the request names a key. What is not
tracked is null, not zero: spend is counted only for a key with a budget, requests per
minute only with an rpm limit, requests in flight only with a concurrency limit.
Without client keys nothing is tracked per caller: ``key`` and every count are null.

Spend includes the worst-case holds of the key's requests still in flight, as the
budgets see it (``proxy.budget``), so it can fall when they settle. This request counts
like any API request: it is in the rpm count, and its own concurrency slot is left out
of ``in_use``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from proxy.controls import ClientKey
from proxy.quotas import (
    DAY_S,
    MICRO,
    KeyUsage,
    day_reset,
    month_id,
    month_reset,
)
from proxy.state import CLIENT_KEYS, QUOTAS


class Period(msgspec.Struct, frozen=True):
    """Spend in one budget period (a UTC day or a calendar month, UTC)."""

    spent_usd: float | None
    budget_usd: float | None
    remaining_usd: float | None
    resets_at: str


class Counter(msgspec.Struct, frozen=True):
    in_use: int | None
    limit: int | None


class UsageReport(msgspec.Struct, frozen=True):
    """The answer of ``GET /v3/usage``; null means not tracked for this caller."""

    key: str | None
    day: Period
    month: Period
    rpm: Counter
    concurrency: Counter
    object: str = "usage"


_encode = msgspec.json.Encoder().encode


def _stamp(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _period(spent: int | None, budget: float | None, resets: float) -> Period:
    spent_usd = None if spent is None else spent / MICRO
    remaining = None
    if budget is not None and spent_usd is not None:
        remaining = round(max(budget - spent_usd, 0.0), 6)
    return Period(spent_usd, budget, remaining, _stamp(resets))


def build_report(
    name: str | None, rule: ClientKey | None, used: KeyUsage | None, now: float
) -> UsageReport:
    """Pure: the report for a key (``None``: the anonymous caller of a keyless gateway)."""
    day_ends = day_reset(int(now // DAY_S))
    month_ends = month_reset(month_id(now))
    if rule is None or used is None:
        none = Counter(None, None)
        return UsageReport(
            None, _period(None, None, day_ends), _period(None, None, month_ends),
            none, none,
        )  # fmt: skip
    budgeted = rule.budget_usd_day is not None or rule.budget_usd_month is not None
    rpm = used.requests_last_minute if rule.rpm is not None else None
    # guard holds one slot for this very request.
    conc = max(used.in_flight - 1, 0) if rule.concurrency is not None else None
    return UsageReport(
        key=name,
        day=_period(
            used.spent_day if budgeted else None, rule.budget_usd_day, day_ends
        ),
        month=_period(
            used.spent_month if budgeted else None, rule.budget_usd_month, month_ends
        ),
        rpm=Counter(rpm, rule.rpm),
        concurrency=Counter(conc, rule.concurrency),
    )


async def usage(request: web.Request) -> web.Response:
    keys = request.app[CLIENT_KEYS]
    if not keys:
        report = build_report(None, None, None, time.time())
    else:
        name = keys.authenticate(request.headers)
        used = await request.app[QUOTAS].usage(name)
        report = build_report(name, keys[name], used, time.time())
    return web.Response(
        body=_encode(report),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
