"""``Idempotency-Key`` claims and answers in this process's memory (no ``redis_url``):
at most ``max_entries`` keys and ``max_bytes`` of answers, the oldest finished ones
forgotten first; a running claim is never forgotten (it ends with its request)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from proxy.config_idempotency import IdempotencyConfig
from proxy.errors import Overloaded
from proxy.freeing import LARGE, release
from proxy.idempotency import Seen


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    owner: str | None  # the running request's; None once finished
    expires_at: float
    seen: Seen | None = None
    size: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryStore:
    """One process's keys: at most ``max_entries`` keys and ``max_bytes`` of answers,
    the oldest finished ones forgotten first (a repeat after that runs again: size
    these for the traffic of ``ttl_s``, or use Redis)."""

    lease_s: float | None = None

    def __init__(self, config: IdempotencyConfig, clock: Any = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.owner is None
            and entry.expires_at <= self._clock()
        ):
            self._forget(key)
            return None
        return entry

    def _forget(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        entry.done.set()
        if entry.size > LARGE and entry.seen is not None and entry.seen.answer:
            # Freed on the loop, a 256 MiB answer held it ~25 ms (bench/stall.py
            # --keep-answers): freed in a thread once the entry and replays let go.
            release([entry.seen.answer.body])

    def _make_room(self, entries: int, size: int) -> bool:
        """Forget expired, then the oldest finished entries, until ``entries`` more
        keys and ``size`` more bytes fit; False if running requests fill it."""
        cfg = self._config
        for key in list(self._entries):
            if (
                len(self._entries) + entries <= cfg.max_entries
                and self._bytes + size <= cfg.max_bytes
            ):
                return True
            if self._entries[key].owner is None:
                self._forget(key)
        return (
            len(self._entries) + entries <= cfg.max_entries
            and self._bytes + size <= cfg.max_bytes
        )

    async def claim(self, key: str, fingerprint: str, owner: str) -> Seen | None:
        entry = self._live(key)
        if entry is not None:
            return entry.seen or Seen(entry.fingerprint)
        if not self._make_room(1, 0):
            raise Overloaded(
                "too many idempotent requests are running; retry shortly",
                code="idempotency_store_full",
                headers={"Retry-After": "1"},
            )
        # Running entries never expire here: the process that runs them holds them.
        self._entries[key] = _Entry(fingerprint, owner, math.inf)
        return None

    async def keep(self, key: str, owner: str, seen: Seen, ttl_s: float) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.owner != owner:
            return
        size = len(seen.answer.body) if seen.answer is not None else 0
        del self._entries[key]  # while room is made, and to put it last
        if not self._make_room(1, size):
            seen = Seen(seen.fingerprint, lost=True)  # pragma: no cover (checked cap)
            size = 0
        entry.owner, entry.seen, entry.size = None, seen, size
        entry.expires_at = self._clock() + ttl_s
        self._entries[key] = entry
        self._bytes += size
        entry.done.set()

    async def drop(self, key: str, owner: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.owner == owner:
            self._forget(key)

    async def renew(self, key: str, owner: str) -> None:  # pragma: no cover
        return

    async def changed(self, key: str, within_s: float) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await entry.done.wait()

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0
