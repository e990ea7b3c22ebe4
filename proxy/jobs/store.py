"""Job records: in this process (``MemoryJobs``) or in Redis
(``proxy.jobs.redis_jobs.RedisJobs``), shared by every replica.

A record moves between states only by ``transition``, which changes it only if its
state is one of those expected, in one step (a Lua script in Redis): a job cancelled
on one replica while another finishes it ends in exactly one of the two states. Each
record lives ``jobs.ttl_s`` from its creation, its result with it; an owner's jobs are
listed newest first from an index of their ids.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection
from typing import Protocol

from proxy.errors import StorageUnavailable
from proxy.jobs.records import TERMINAL, JobRecord


def unavailable() -> StorageUnavailable:
    return StorageUnavailable("the job store (Redis) did not answer; retry")


class JobStore(Protocol):
    async def create(self, record: JobRecord, *, max_open: int) -> bool:
        """Store a new record unless its owner has ``max_open`` jobs not ended."""
        ...

    async def get(self, job_id: str) -> JobRecord | None: ...

    async def result(self, job_id: str) -> bytes | None: ...

    async def transition(
        self,
        record: JobRecord,
        expected: Collection[str],
        *,
        result: bytes | None = None,
    ) -> bool:
        """Replace the record by ``record`` if its state is one of ``expected``."""
        ...

    async def page(
        self, owner: str, *, limit: int, after: str | None
    ) -> tuple[list[JobRecord], bool]:
        """The owner's jobs, newest first, after the job ``after``; and whether
        there are more."""
        ...

    async def close(self) -> None: ...


class MemoryJobs:
    """One process's jobs; at most ``max_kept`` records (the oldest ended ones go
    first), each for ``ttl_s``."""

    def __init__(self, *, ttl_s: float, max_kept: int) -> None:
        self._ttl = ttl_s
        self._max = max_kept
        self._records: OrderedDict[str, tuple[JobRecord, bytes | None]] = OrderedDict()

    def _prune(self) -> None:
        cutoff = time.time() - self._ttl
        while self._records:
            job_id, (rec, _) = next(iter(self._records.items()))
            if rec.created_at >= cutoff:
                break
            del self._records[job_id]
        over = len(self._records) - self._max
        if over > 0:
            ended = [i for i, (r, _) in self._records.items() if r.state in TERMINAL]
            for job_id in ended[:over]:
                del self._records[job_id]

    async def create(self, record: JobRecord, *, max_open: int) -> bool:
        self._prune()
        open_jobs = sum(
            1
            for r, _ in self._records.values()
            if r.owner == record.owner and r.state not in TERMINAL
        )
        if open_jobs >= max_open:
            return False
        self._records[record.id] = (record, None)
        self._prune()
        return True

    async def get(self, job_id: str) -> JobRecord | None:
        got = self._records.get(job_id)
        if got is None or got[0].created_at < time.time() - self._ttl:
            return None
        return got[0]

    async def result(self, job_id: str) -> bytes | None:
        got = self._records.get(job_id)
        return None if got is None else got[1]

    async def transition(
        self,
        record: JobRecord,
        expected: Collection[str],
        *,
        result: bytes | None = None,
    ) -> bool:
        got = self._records.get(record.id)
        if got is None or got[0].state not in expected:
            return False
        self._records[record.id] = (record, result if result is not None else got[1])
        return True

    async def page(
        self, owner: str, *, limit: int, after: str | None
    ) -> tuple[list[JobRecord], bool]:
        mine = [r for r, _ in reversed(self._records.values()) if r.owner == owner]
        if after is not None:
            ids = [r.id for r in mine]
            mine = mine[ids.index(after) + 1 :] if after in ids else []
        return mine[:limit], len(mine) > limit

    async def close(self) -> None:
        self._records.clear()
