"""The jobs waiting to run: the queue's interface, and a bounded ``asyncio.Queue`` for
a gateway without Redis (jobs then run in the process that accepted them and are lost
if it stops). With Redis, ``proxy.jobs.redis_jobs.RedisQueue``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from proxy.errors import Overloaded


@dataclass(frozen=True, slots=True)
class Delivery:
    job_id: str
    entry: str  # the stream entry's id ("" in memory)


def full(max_queued: int) -> Overloaded:
    return Overloaded(
        f"{max_queued} jobs are already waiting to run; retry later",
        code="job_queue_full",
        headers={"Retry-After": "5"},
    )


class JobQueue(Protocol):
    async def put(self, job_id: str) -> None:
        """Queue ``job_id``, or raise 503 when ``max_queued`` jobs are waiting."""
        ...

    async def receive(self) -> Delivery: ...

    async def renew(self, delivery: Delivery) -> None:
        """Keep the claim on a running job."""
        ...

    async def ack(self, delivery: Delivery) -> None: ...

    async def depth(self) -> tuple[int, float]:
        """Entries waiting or running, and the oldest one's age in seconds."""
        ...


class MemoryQueue:
    def __init__(self, max_queued: int) -> None:
        self._max = max_queued
        self._queue: asyncio.Queue[str] = asyncio.Queue(max_queued)
        self._since: dict[str, float] = {}  # each job waiting or running: queued at

    async def put(self, job_id: str) -> None:
        try:
            self._queue.put_nowait(job_id)
        except asyncio.QueueFull:
            raise full(self._max) from None
        self._since[job_id] = time.time()

    async def receive(self) -> Delivery:
        return Delivery(await self._queue.get(), "")

    async def renew(self, delivery: Delivery) -> None:
        return None

    async def ack(self, delivery: Delivery) -> None:
        self._since.pop(delivery.job_id, None)

    async def depth(self) -> tuple[int, float]:
        times = self._since.values()
        return len(times), (time.time() - min(times) if times else 0.0)
