"""Jobs in Redis, shared by every replica: records (``RedisJobs``) and the queue
(``RedisQueue``), a Redis stream read by a consumer group. Imported only with
``redis_url`` set (redis-py loads cryptography). Every Redis failure is raised as
``StorageUnavailable``.

Why Redis Streams: they are a queue engine Redis already runs (no second broker, no
scheduler of ours), with exactly the semantics asked of jobs: ``XADD`` queues,
``XREADGROUP`` hands each entry to one replica of the group and keeps it in that
consumer's pending list until ``XACK``, and ``XAUTOCLAIM`` hands an entry whose
consumer has been silent for ``lease_s`` (a replica that died) to another. A running
job renews its claim (``XCLAIM ... JUSTID`` resets the entry's idle time) every
``lease_s / 3``. arq and taskiq add their own job model, serialisation and result
store on top of the same primitives; ours is a record (``proxy.jobs.store``), so a
stream entry only carries its id. Delivery is at least once: a job whose replica
was killed runs again elsewhere.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from proxy.controls import RedisSettings
from proxy.jobs.config import Jobs
from proxy.jobs.queue import Delivery, full
from proxy.jobs.records import TERMINAL, JobRecord, decode, encode
from proxy.jobs.store import unavailable

_GROUP = "runners"

# KEYS: the record's hash, the owner's ids, the owner's open (not ended) ids.
# ARGV: the record, its state, the job id, now (µs), ttl (s), the owner's open cap.
_CREATE = """
local now, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ttl * 1000000)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[6]) then return 0 end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'state', ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
for _, set in ipairs({KEYS[2], KEYS[3]}) do
  redis.call('ZADD', set, now, ARGV[3])
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now - ttl * 1000000)
  redis.call('EXPIRE', set, ttl)
end
return 1
"""

# KEYS: the record's hash, the owner's open ids. ARGV: the new record, its state,
# the result ("" for none), the job id, "1" if the state is an end, then the states
# expected.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
for i = 6, #ARGV do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], 'record', ARGV[1], 'state', ARGV[2])
    if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[3]) end
    if ARGV[5] == '1' then redis.call('ZREM', KEYS[2], ARGV[4]) end
    return 1
  end
end
return 0
"""


class RedisJobs:
    """Records in Redis hashes (``record``, ``state``, ``result``) that expire
    ``ttl_s`` after creation; each owner's ids in a sorted set by creation time, and
    those not ended in another (the owner's cap on open jobs)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, ttl_s: float) -> None:
        # redis-py annotates its asyncio client with its sync return types.
        self._redis: Any = client
        self._prefix = f"{prefix}:jobs"
        self._ttl = max(1, int(ttl_s))
        self._transition = client.register_script(_TRANSITION)
        self._create = client.register_script(_CREATE)

    def _key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def _owned(self, owner: str) -> str:
        return f"{self._prefix}:owner:{owner}"

    def _open(self, owner: str) -> str:
        return f"{self._prefix}:open:{owner}"

    async def create(self, record: JobRecord, *, max_open: int) -> bool:
        keys = [
            self._key(record.id),
            self._owned(record.owner),
            self._open(record.owner),
        ]
        # Microseconds: jobs created in one second still list in order (and within a
        # double's exact integers).
        now_us = time.time_ns() // 1000
        args = [encode(record), record.state, record.id, now_us, self._ttl, max_open]
        try:
            made = await self._create(keys=keys, args=args)
        except RedisError as exc:
            raise unavailable() from exc
        return bool(made)

    async def get(self, job_id: str) -> JobRecord | None:
        try:
            raw = await self._redis.hget(self._key(job_id), "record")
        except RedisError as exc:
            raise unavailable() from exc
        return None if raw is None else decode(raw)

    async def result(self, job_id: str) -> bytes | None:
        try:
            raw: bytes | None = await self._redis.hget(self._key(job_id), "result")
        except RedisError as exc:
            raise unavailable() from exc
        return raw

    async def transition(
        self,
        record: JobRecord,
        expected: Collection[str],
        *,
        result: bytes | None = None,
    ) -> bool:
        end = "1" if record.state in TERMINAL else "0"
        args = [encode(record), record.state, result or b"", record.id, end, *expected]
        keys = [self._key(record.id), self._open(record.owner)]
        try:
            done = await self._transition(keys=keys, args=args)
        except RedisError as exc:
            raise unavailable() from exc
        return bool(done)

    async def page(
        self, owner: str, *, limit: int, after: str | None
    ) -> tuple[list[JobRecord], bool]:
        owned = self._owned(owner)
        try:
            start = 0
            if after is not None:
                rank = await self._redis.zrevrank(owned, after)
                if rank is None:
                    return [], False
                start = rank + 1
            ids = await self._redis.zrevrange(owned, start, start + limit)
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hget(self._key(job_id.decode()), "record")
                raws = await pipe.execute()
        except RedisError as exc:
            raise unavailable() from exc
        records = [decode(r) for r in raws if r is not None]
        return records[:limit], len(ids) > limit

    async def close(self) -> None:
        return None


class RedisQueue:
    """One stream per gateway (``<prefix>:jobs:queue``); this process is one consumer
    of its group."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        max_queued: int,
        lease_s: float,
        block_s: float = 1.0,
    ) -> None:
        # redis-py annotates its asyncio client with its sync return types.
        self._redis: Any = client
        self._stream = f"{prefix}:jobs:queue"
        self._max = max_queued
        self._lease_ms = int(lease_s * 1000)
        self._block_ms = int(block_s * 1000)
        self.consumer = uuid.uuid4().hex
        self._group_made = False

    async def _group(self) -> None:
        if self._group_made:
            return
        try:
            await self._redis.xgroup_create(self._stream, _GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_made = True

    async def put(self, job_id: str) -> None:
        try:
            await self._group()
            # Entries are deleted when acknowledged: the length is what waits or runs.
            if await self._redis.xlen(self._stream) >= self._max:
                raise full(self._max)
            await self._redis.xadd(self._stream, {"job": job_id})
        except RedisError as exc:
            raise unavailable() from exc

    async def receive(self) -> Delivery:
        """The next entry: first one whose claim expired, else a new one."""
        while True:
            try:
                got = await self._next()
            except RedisError as exc:
                raise unavailable() from exc
            if got is not None:
                return got

    async def _next(self) -> Delivery | None:
        await self._group()
        _, claimed, _ = await self._redis.xautoclaim(
            self._stream, _GROUP, self.consumer, self._lease_ms, "0-0", count=1
        )
        for entry, fields in claimed:
            if fields:
                return _delivery(entry, fields)
        got = await self._redis.xreadgroup(
            _GROUP,
            self.consumer,
            {self._stream: ">"},
            count=1,
            block=self._block_ms,
        )
        for _, entries in got or ():
            for entry, fields in entries:
                return _delivery(entry, fields)
        return None

    async def renew(self, delivery: Delivery) -> None:
        try:
            await self._redis.xclaim(
                self._stream,
                _GROUP,
                self.consumer,
                0,
                [delivery.entry],
                justid=True,
            )
        except RedisError as exc:
            raise unavailable() from exc

    async def ack(self, delivery: Delivery) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(self._stream, _GROUP, delivery.entry)
                pipe.xdel(self._stream, delivery.entry)
                await pipe.execute()
        except RedisError as exc:
            raise unavailable() from exc

    async def depth(self) -> tuple[int, float]:
        try:
            length = await self._redis.xlen(self._stream)
            first = await self._redis.xrange(self._stream, count=1)
        except RedisError as exc:
            raise unavailable() from exc
        if not first:
            return length, 0.0
        ms = int(first[0][0].decode().partition("-")[0])
        return length, max(0.0, time.time() - ms / 1000)


def _delivery(entry: bytes, fields: dict[bytes, bytes]) -> Delivery:
    return Delivery(fields[b"job"].decode(), entry.decode())


def connect(
    url: str, settings: RedisSettings, jobs: Jobs
) -> tuple[RedisJobs, RedisQueue, Callable[[], Awaitable[None]]]:
    """The store and queue on one client of their own, and how to close it."""
    client = aioredis.Redis.from_url(
        url,
        # Above the queue's blocking read (1 s).
        socket_timeout=5.0,
        socket_connect_timeout=max(settings.timeout_s, 1.0),
        retry=Retry(NoBackoff(), 0),
        # No CLIENT SETINFO: its version lookup reads package metadata from disk.
        driver_info=None,
    )
    store = RedisJobs(client, prefix=settings.prefix, ttl_s=jobs.ttl_s)
    queue = RedisQueue(
        client, prefix=settings.prefix, max_queued=jobs.max_queued, lease_s=jobs.lease_s
    )
    return store, queue, client.aclose
