"""``Idempotency-Key`` claims and answers in Redis, shared by every replica.

A first request claims its key with one ``SET key value NX PX lease``: the value names
the claim's owner and the request's fingerprint, and the lease (``idempotency.lease_s``)
is renewed by the replica running the request (``Keeper.running``), so a replica that
dies frees the key after at most one lease. Keeping the answer, renewing and freeing
are each a script that first checks the claim is still the caller's, so a request whose
lease ran out (its replica stalled) cannot overwrite the answer of the one that took
over. Repeats look again every ``POLL_S`` while they wait. Redis down: 503
``idempotency_unavailable`` (the key cannot be checked, and running the request
unchecked could bill it twice).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy.config_idempotency import IdempotencyConfig
from proxy.controls import RedisSettings
from proxy.errors import Overloaded
from proxy.idempotency import POLL_S, Seen
from proxy.metrics import Metrics

log = logging.getLogger("imagegate")

_RUNNING, _DONE = b"R", b"D"

# KEYS[1]: the key; ARGV[1]: the running value's head (R + owner); then per script.
_MINE = """
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, string.len(ARGV[1])) ~= ARGV[1] then return 0 end
"""
_KEEP = _MINE + "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\nreturn 1\n"
_DROP = _MINE + "redis.call('DEL', KEYS[1])\nreturn 1\n"
_RENEW = _MINE + "redis.call('PEXPIRE', KEYS[1], ARGV[2])\nreturn 1\n"

_decode_seen = msgspec.msgpack.Decoder(Seen).decode
_encode = msgspec.msgpack.Encoder().encode


def _unavailable() -> Overloaded:
    return Overloaded(
        "Idempotency-Key cannot be checked right now; retry shortly",
        code="idempotency_unavailable",
        headers={"Retry-After": "1"},
    )


class RedisKeys:
    def __init__(
        self,
        url: str,
        settings: RedisSettings,
        config: IdempotencyConfig,
        metrics: Metrics,
    ) -> None:
        self.lease_s: float | None = config.lease_s
        self._errors = metrics.limit_store_errors
        self._lease_ms = round(config.lease_s * 1000)
        self._prefix = f"{settings.prefix}:idem:"
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=max(settings.timeout_s, 5.0),  # answers are MiBs
            socket_connect_timeout=settings.timeout_s,
            retry=Retry(NoBackoff(), 0),
            driver_info=None,
        )
        self._keep = self._redis.register_script(_KEEP)
        self._drop = self._redis.register_script(_DROP)
        self._renew = self._redis.register_script(_RENEW)

    def _name(self, key: str) -> str:
        return self._prefix + key

    async def claim(self, key: str, fingerprint: str, owner: str) -> Seen | None:
        running = _RUNNING + owner.encode() + fingerprint.encode()
        name = self._name(key)
        try:
            while True:
                if await self._redis.set(name, running, nx=True, px=self._lease_ms):
                    return None
                value = cast(bytes | None, await self._redis.get(name))
                if value is None:
                    continue  # freed or expired between the two: claim again
                if value[:1] == _RUNNING:
                    return Seen(value[1 + len(owner) :].decode())
                return _decode_seen(value[1:])
        except (RedisError, OSError) as exc:
            self._failed("claim", exc)
            raise _unavailable() from None

    async def _mine(
        self, operation: str, script: object, key: str, owner: str, *args: object
    ) -> None:
        head = _RUNNING + owner.encode()
        try:
            await script(keys=[self._name(key)], args=[head, *args])  # type: ignore[operator]
        except (RedisError, OSError) as exc:
            # The claim then expires by itself after its lease.
            self._failed(operation, exc)

    def _failed(self, operation: str, exc: Exception) -> None:
        self._errors.labels(f"idempotency_{operation}").inc()
        log.warning(
            "idempotency store unavailable",
            extra={"fields": {"operation": operation, "error": type(exc).__name__}},
        )

    async def keep(self, key: str, owner: str, seen: Seen, ttl_s: float) -> None:
        value = _DONE + _encode(seen)
        await self._mine("keep", self._keep, key, owner, value, round(ttl_s * 1000))

    async def drop(self, key: str, owner: str) -> None:
        await self._mine("drop", self._drop, key, owner)

    async def renew(self, key: str, owner: str) -> None:
        await self._mine("renew", self._renew, key, owner, self._lease_ms)

    async def changed(self, key: str, within_s: float) -> None:
        await asyncio.sleep(min(POLL_S, within_s))

    async def close(self) -> None:
        await self._redis.aclose()
