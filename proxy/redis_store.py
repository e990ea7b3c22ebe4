"""The per-key quotas of ``proxy.quotas`` shared by every replica through one Redis.

Each operation is one Lua script, so a check and its update are atomic across replicas.
The scripts read Redis' own clock (``TIME``), never the replica's, so replicas with
skewed clocks still agree on windows, days and months. A budget reservation is one
script (check what is left, add) and so is its settlement (give back, add the cost);
a period whose key has expired is not given anything back. Concurrency slots are leases
that expire after ``redis.lease_s``: a replica that dies cannot hold slots forever.
When Redis cannot be reached the config's fail mode decides: open admits the request
uncounted, closed answers 503 (the default for budgets). A single Redis is assumed, not
Redis Cluster: the scripts build key names from the clock.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy.controls import ClientKey, RedisSettings
from proxy.errors import Overloaded
from proxy.metrics import Metrics
from proxy.quotas import (
    KeyUsage,
    Refusal,
    Reservation,
    day_reset,
    micro_usd,
    month_reset,
)

log = logging.getLogger("imagegate")
T = TypeVar("T")

# days since 1970-01-01 -> yyyymm (the civil-from-days algorithm, in integers).
_LUA_MONTH = """
local function month_of(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y * 100 + m
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local day = math.floor(now / 86400)
local month = month_of(day)
local p = KEYS[1]
"""

# ARGV: rpm, concurrency, day budget, month budget (micro-USD; 0 = none), lease s, id
_ADMIT = (
    _LUA_MONTH
    + """
local rpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2])
local bday, bmonth = tonumber(ARGV[3]), tonumber(ARGV[4])
if bday > 0 and tonumber(redis.call('GET', p .. ':spend:d:' .. day) or '0') >= bday then
  return {'budget_day', tostring(day), tostring(now)}
end
if bmonth > 0 and tonumber(redis.call('GET', p .. ':spend:m:' .. month) or '0') >= bmonth then
  return {'budget_month', tostring(month), tostring(now)}
end
local rk, ck = p .. ':rpm', p .. ':conc'
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', rk, '-inf', now - 60)
  if redis.call('ZCARD', rk) >= rpm then
    local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
    return {'rpm', tostring(tonumber(oldest[2]) + 60 - now), tostring(now)}
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', ck, '-inf', now)
  if redis.call('ZCARD', ck) >= conc then return {'concurrency', '1', tostring(now)} end
end
if rpm > 0 then
  redis.call('ZADD', rk, now, ARGV[6])
  redis.call('EXPIRE', rk, 61)
end
if conc > 0 then
  local lease = tonumber(ARGV[5])
  redis.call('ZADD', ck, now + lease, ARGV[6])
  redis.call('EXPIRE', ck, math.ceil(lease) + 1)
end
return {'ok'}
"""
)

# ARGV: micro-USD to add
_SPEND = (
    _LUA_MONTH
    + """
local dk, mk = p .. ':spend:d:' .. day, p .. ':spend:m:' .. month
redis.call('INCRBY', dk, ARGV[1])
redis.call('EXPIRE', dk, 2 * 86400)
redis.call('INCRBY', mk, ARGV[1])
redis.call('EXPIRE', mk, 32 * 86400)
return 1
"""
)


# ARGV: micro-USD to reserve, day budget, month budget (micro-USD; 0 = none)
_RESERVE = (
    _LUA_MONTH
    + """
local amount, bday, bmonth = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local dk, mk = p .. ':spend:d:' .. day, p .. ':spend:m:' .. month
local sday = tonumber(redis.call('GET', dk) or '0')
if bday > 0 and sday + amount > bday then
  return {'budget_day', tostring(day), tostring(now), tostring(bday - sday)}
end
local smonth = tonumber(redis.call('GET', mk) or '0')
if bmonth > 0 and smonth + amount > bmonth then
  return {'budget_month', tostring(month), tostring(now), tostring(bmonth - smonth)}
end
redis.call('INCRBY', dk, amount)
redis.call('EXPIRE', dk, 2 * 86400)
redis.call('INCRBY', mk, amount)
redis.call('EXPIRE', mk, 32 * 86400)
return {'ok', tostring(day), tostring(month)}
"""
)

# ARGV: micro-USD spent, then amount, day, month of each reservation to give back
_SETTLE = (
    _LUA_MONTH
    + """
for i = 2, #ARGV, 3 do
  -- A reservation's period that has expired took the reservation with it.
  local rd, rm = p .. ':spend:d:' .. ARGV[i + 1], p .. ':spend:m:' .. ARGV[i + 2]
  if redis.call('EXISTS', rd) == 1 then redis.call('DECRBY', rd, ARGV[i]) end
  if redis.call('EXISTS', rm) == 1 then redis.call('DECRBY', rm, ARGV[i]) end
end
if tonumber(ARGV[1]) > 0 then
  local dk, mk = p .. ':spend:d:' .. day, p .. ':spend:m:' .. month
  redis.call('INCRBY', dk, ARGV[1])
  redis.call('EXPIRE', dk, 2 * 86400)
  redis.call('INCRBY', mk, ARGV[1])
  redis.call('EXPIRE', mk, 32 * 86400)
end
return 1
"""
)


# Read-only: today's and this month's spend, hits in the rpm window, live leases.
# The same cuts as _ADMIT's ZREMRANGEBYSCORE, as exclusive ZCOUNT bounds.
_USAGE = (
    _LUA_MONTH
    + """
return {
  redis.call('GET', p .. ':spend:d:' .. day) or '0',
  redis.call('GET', p .. ':spend:m:' .. month) or '0',
  redis.call('ZCOUNT', p .. ':rpm', '(' .. (now - 60), '+inf'),
  redis.call('ZCOUNT', p .. ':conc', '(' .. now, '+inf'),
}
"""
)


class _Down(Exception):
    """Redis could not be asked; the caller applies its fail mode."""


class RedisStore:
    def __init__(self, url: str, settings: RedisSettings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        # No client-side retries: an outage must reach the fail mode at once.
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s,
            retry=Retry(NoBackoff(), 0),
            # No CLIENT SETINFO: its version lookup reads package metadata from disk
            # on the event loop.
            driver_info=None,
        )
        self._down_until = 0.0
        self._admit = self._redis.register_script(_ADMIT)
        self._spend = self._redis.register_script(_SPEND)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._usage = self._redis.register_script(_USAGE)

    def _key(self, name: str) -> str:
        return f"{self._settings.prefix}:key:{name}"

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis call; ``_Down`` if it fails or Redis failed moments ago."""
        if time.monotonic() < self._down_until:
            # Fail fast: a Redis that hangs would otherwise cost every request timeout_s.
            self._metrics.limit_store_errors.labels(operation).inc()
            raise _Down
        try:
            return await call()
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self._settings.recheck_s
            self._metrics.limit_store_errors.labels(operation).inc()
            log.warning(
                "limits store unavailable",
                extra={"fields": {"operation": operation, "error": type(exc).__name__}},
            )
            raise _Down from exc

    async def admit(self, name: str, rule: ClientKey, lease: str) -> Refusal | None:
        args: list[str | int | float] = [
            rule.rpm or 0,
            rule.concurrency or 0,
            micro_usd(rule.budget_usd_day) if rule.budget_usd_day else 0,
            micro_usd(rule.budget_usd_month) if rule.budget_usd_month else 0,
            self._settings.lease_s,
            lease,
        ]
        try:
            reply = await self._call(
                "admit", lambda: self._admit(keys=[self._key(name)], args=args)
            )
        except _Down:
            self._fail_mode(name, rule)
            return None
        return _refusal([v.decode() if isinstance(v, bytes) else v for v in reply])

    def _fail_mode(self, name: str, rule: ClientKey) -> None:
        s = self._settings
        budgets = rule.budget_usd_day is not None or rule.budget_usd_month is not None
        rates = rule.rpm is not None or rule.concurrency is not None
        if (budgets and s.budgets_on_error == "closed") or (
            rates and s.rates_on_error == "closed"
        ):
            raise Overloaded(
                f"limits for key '{name}' cannot be checked right now; retry later",
                code="limits_unavailable",
                headers={"Retry-After": "1"},
            )

    async def release(self, name: str, rule: ClientKey, lease: str) -> None:
        if rule.concurrency is None:
            return
        key = f"{self._key(name)}:conc"
        # On failure the lease expires by itself after lease_s.
        with contextlib.suppress(_Down):
            await self._call("release", lambda: self._redis.zrem(key, lease))

    async def add_spend(self, name: str, usd: float) -> None:
        args = [micro_usd(usd)]
        with contextlib.suppress(_Down):
            await self._call(
                "spend", lambda: self._spend(keys=[self._key(name)], args=args)
            )

    async def reserve(
        self, name: str, rule: ClientKey, amount: int
    ) -> Reservation | Refusal:
        args = [
            amount,
            micro_usd(rule.budget_usd_day) if rule.budget_usd_day else 0,
            micro_usd(rule.budget_usd_month) if rule.budget_usd_month else 0,
        ]
        try:
            reply = await self._call(
                "reserve", lambda: self._reserve(keys=[self._key(name)], args=args)
            )
        except _Down:
            self._fail_mode(name, rule)
            return Reservation(0, 0, 0)  # failing open: served, nothing held
        match [v.decode() if isinstance(v, bytes) else v for v in reply]:
            case ["ok", day, month]:
                return Reservation(amount, int(day), int(month))
            case ["budget_day", day, now, left]:
                reset = day_reset(int(day))
                return Refusal(
                    "budget_day", reset - float(now), reset, amount, _micro(left)
                )
            case ["budget_month", month, now, left]:
                reset = month_reset(int(month))
                return Refusal(
                    "budget_month", reset - float(now), reset, amount, _micro(left)
                )
        raise AssertionError(f"unexpected reserve reply {reply!r}")  # pragma: no cover

    async def settle(self, name: str, held: Sequence[Reservation], usd: float) -> None:
        held = [r for r in held if r.amount > 0]
        if not held:
            if usd > 0:
                await self.add_spend(name, usd)
            return
        args: list[int] = [micro_usd(usd)]
        for r in held:
            args += [r.amount, r.day, r.month]
        # On failure the reservations stay counted: the key is over-charged until
        # the period ends, never under-charged.
        with contextlib.suppress(_Down):
            await self._call(
                "settle", lambda: self._settle(keys=[self._key(name)], args=args)
            )

    async def usage(self, name: str) -> KeyUsage:
        try:
            reply = await self._call(
                "usage", lambda: self._usage(keys=[self._key(name)], args=[])
            )
        except _Down:
            raise Overloaded(
                f"the usage of key '{name}' cannot be read right now; retry later",
                code="limits_unavailable",
                headers={"Retry-After": "1"},
            ) from None
        day, month, hits, leases = (
            v.decode() if isinstance(v, bytes) else v for v in reply
        )
        return KeyUsage(_micro(day), _micro(month), int(hits), int(leases))

    async def close(self) -> None:
        await self._redis.aclose()


def _micro(lua_number: str) -> int:
    # Lua's tostring writes numbers of 15 digits and more as "1e+15".
    return int(float(lua_number))


def _refusal(reply: list[str]) -> Refusal | None:
    match reply:
        case ["ok"]:
            return None
        case ["budget_day", day, now]:
            reset = day_reset(int(day))
            return Refusal("budget_day", reset - float(now), reset)
        case ["budget_month", month, now]:
            reset = month_reset(int(month))
            return Refusal("budget_month", reset - float(now), reset)
        case ["rpm", wait, _]:
            return Refusal("rpm", max(float(wait), 0.0))
        case ["concurrency", wait, _]:
            return Refusal("concurrency", float(wait))
    raise AssertionError(
        f"unexpected limits script reply {reply!r}"
    )  # pragma: no cover
