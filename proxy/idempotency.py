"""``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header): a repeat gets the
first request's answer instead of a second upstream call and a second charge.

A key is scoped to its caller (the client key's name; without client keys, the
client's address, as backpressure knows it) and bound to the request's fingerprint
(``request_digest``: method, path and the canonical body). ``Keeper.begin`` claims the key
for a first request, or hands back the answer kept for a repeat; a repeat of a request
still running waits for it (``wait_s``), then gets a 409 with ``Retry-After``; the same
key with another fingerprint is a 422. ``Keeper.finish`` keeps the answer
(``worth_keeping``: 2xx and deterministic 4xx) or frees the key (5xx, 408, 429: a retry
runs again).

Two stores implement ``Store``: ``proxy.idempotency_memory.MemoryStore`` (one
process; bounded in entries and bytes) and ``proxy.idempotency_redis.RedisKeys``
(every replica; a claim is a lease its replica renews, so one that dies frees it). Answers over ``max_answer_bytes``
go to the object store when one is configured (``Spill``), else are not kept: a repeat
then gets 409 ``idempotency_answer_not_kept``, never a second run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec

from proxy.config_idempotency import IdempotencyConfig
from proxy.errors import (
    IdempotencyAnswerLost,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRequest,
    StorageUnavailable,
)
from proxy.freeing import LARGE, copied
from proxy.metrics import Metrics
from proxy.tasks import TaskGroup

T = TypeVar("T")

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# How often a waiting repeat looks at a store that cannot wake it (Redis).
POLL_S = 0.1
# Response headers a replay carries besides the body (the rest are per request).
KEPT_HEADERS = frozenset(
    # Location and Preference-Applied: an async request's 202 (proxy/jobs), so a
    # repeat with the same key gets the same job.
    {"content-type", "retry-after", "x-should-retry", "location", "preference-applied"}
)


class Answer(msgspec.Struct, frozen=True, array_like=True):
    """A kept answer: status, the headers worth replaying, the body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Seen(msgspec.Struct, frozen=True, array_like=True):
    """What a store holds for a key someone else claimed first."""

    fingerprint: str
    answer: Answer | None = None  # None: still running (or not kept, below)
    # The answer was not kept (too large, no object store); never run again.
    lost: bool = False
    # The answer is in the object store under this key.
    spilled: str | None = None


class Store(Protocol):
    # Seconds a claim lasts unless renewed; None: it lasts until finished or dropped.
    lease_s: float | None

    async def claim(self, key: str, fingerprint: str, owner: str) -> Seen | None:
        """Claim ``key`` for ``owner`` (None), or what the store holds for it."""

    async def keep(self, key: str, owner: str, seen: Seen, ttl_s: float) -> None:
        """Replace ``owner``'s claim with ``seen`` for ``ttl_s``."""

    async def drop(self, key: str, owner: str) -> None:
        """Free ``key`` if ``owner`` still holds it."""

    async def renew(self, key: str, owner: str) -> None:
        """Extend ``owner``'s claim by ``lease_s``."""

    async def changed(self, key: str, within_s: float) -> None:
        """Return when ``key`` may have changed, at the latest after ``within_s``."""

    async def close(self) -> None: ...


class Spill(Protocol):
    """Where answers over ``max_answer_bytes`` go: the object store (S3)."""

    async def put(self, key: str, body: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...


class _Packed(msgspec.Struct, frozen=True, array_like=True):
    """An ``Answer`` as stored, its body left encoded (a view of the stored bytes)."""

    status: int
    headers: list[tuple[str, str]]
    body: msgspec.Raw


# msgpack's bin formats: the marker, then the length in 1, 2 or 4 bytes.
_BIN = {0xC4: 1, 0xC5: 2, 0xC6: 4}


async def packed(answer: Answer) -> bytes:
    """``msgspec.msgpack.encode(answer)``, the same bytes; a large body copied in a
    worker thread, a slice at a time: msgspec copied a 256 MiB body in one step of the
    event loop (170-190 ms of CPU)."""
    size = len(answer.body)
    if size <= LARGE or size >= 1 << 32:
        return msgspec.msgpack.encode(answer)
    head = msgspec.msgpack.encode(Answer(answer.status, answer.headers, b""))
    # The empty body's bin 8 header (c4 00) becomes the body's bin 32 header.
    head = head[:-2] + b"\xc6" + size.to_bytes(4, "big")
    return await asyncio.to_thread(copied, [head, answer.body])


async def unpacked(stored: bytes) -> Answer:
    """``msgspec.msgpack.decode(stored, type=Answer)``; a large body copied out in a
    worker thread, a slice at a time (msgspec's copy held the loop as long)."""
    if len(stored) <= LARGE:
        return msgspec.msgpack.decode(stored, type=Answer)
    got = msgspec.msgpack.decode(stored, type=_Packed)  # the body not copied
    raw = memoryview(got.body)
    width = _BIN.get(raw[0]) if raw else None
    if width is None:  # not a bin: decoded as before, with its error
        return msgspec.msgpack.decode(stored, type=Answer)
    body = await asyncio.to_thread(copied, [raw[1 + width :]])
    return Answer(got.status, got.headers, body)


def check_key(value: str | None) -> str | None:
    """The request's ``Idempotency-Key``, checked; None when it has none."""
    if value is None:
        return None
    if not 0 < len(value) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in value):
        raise InvalidRequest(
            f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII "
            "characters",
            param=HEADER,
            code="invalid_idempotency_key",
        )
    return value


def request_digest(method: str, path: str, kind: str, canonical: Any) -> str:
    """SHA-256 over the method, the path and the body's canonical form (a JSON value:
    a JSON body as decoded, a form's fields with its files' digests), its object keys
    sorted, so key order, whitespace, a multipart boundary or charset do not count.
    Long strings (data URLs) enter as their own SHA-256, so no copy of the whole body
    is made: at most one string's UTF-8 bytes at a time."""
    h = hashlib.sha256(f"{method}\0{path}\0{kind}\0".encode())
    try:
        h.update(msgspec.json.encode(_digested(canonical), order="sorted"))
    except RecursionError:  # as deep as the decoder took, on a deeper stack
        raise InvalidRequest("the JSON body is nested too deeply") from None
    return h.hexdigest()


_LONG = 1024


def _leaf(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _LONG:
        return [
            "sha256",
            hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest(),
        ]
    return value


def _digested(value: Any) -> Any:
    """``value`` with its long strings replaced by their digests; without recursion,
    since a client's body may nest as deep as the JSON decoder allows."""
    if not isinstance(value, dict | list):
        return _leaf(value)
    root: dict[Any, Any] | list[Any] = {} if isinstance(value, dict) else []
    pending: list[tuple[Any, dict[Any, Any] | list[Any]]] = [(value, root)]
    while pending:
        source, copy = pending.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for name, item in items:
            if isinstance(item, dict | list):
                made: Any = {} if isinstance(item, dict) else []
                pending.append((item, made))
            else:
                made = _leaf(item)
            if isinstance(copy, dict):
                copy[name] = made
            else:
                copy.append(made)
    return root


def worth_keeping(status: int) -> bool:
    """2xx and the 4xx a repeat would get again; not 5xx, 408 (the client was too
    slow) or 429 (a limit that passes): a retry of those must be able to run."""
    return status < 500 and status not in (408, 429)


def store_key(scope: str, key: str) -> str:
    # Hashed: scope and key are the client's text; the store sees fixed-size names.
    return hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()


@dataclass(slots=True)
class Ticket:
    """The claim of a first request: ``Keeper.finish`` ends it, or ``Keeper.running``
    frees it when the request ends otherwise."""

    key: str
    owner: str
    fingerprint: str


@dataclass(slots=True)
class Keeper:
    config: IdempotencyConfig
    store: Store
    metrics: Metrics
    spill: Spill | None = None
    _tasks: TaskGroup = field(default_factory=TaskGroup)

    async def begin(self, scope: str, key: str, digest: str) -> Ticket | Answer:
        """Claim the key (a ``Ticket``: run the request) or the answer to replay."""
        name = store_key(scope, key)
        owner = os.urandom(16).hex()
        deadline = time.monotonic() + self.config.wait_s
        while True:
            seen = await self.store.claim(name, digest, owner)
            if seen is None:
                return Ticket(name, owner, digest)
            if seen.fingerprint != digest:
                self.metrics.idempotency.labels("mismatch").inc()
                raise IdempotencyKeyReused(
                    f"this {HEADER} was used with another request; use a new key for "
                    "a new request",
                    param=HEADER,
                    code="idempotency_key_reused",
                )
            answer = await self._answer(seen)
            if answer is not None:
                self.metrics.idempotency.labels("replayed").inc()
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                self.metrics.idempotency.labels("conflict").inc()
                retry = max(1, math.ceil(min(self.config.wait_s, 5.0)))
                raise IdempotencyKeyInUse(
                    f"a request with this {HEADER} is still running; retry later for "
                    "its answer",
                    param=HEADER,
                    code="idempotency_key_in_use",
                    headers={"Retry-After": str(retry)},
                )
            await self.store.changed(name, left)

    async def _answer(self, seen: Seen) -> Answer | None:
        if seen.answer is not None:
            return seen.answer
        body = None
        if seen.spilled is not None and self.spill is not None:
            body = await self.spill.get(seen.spilled)
        if body is not None:
            return await unpacked(body)
        if seen.lost or seen.spilled is not None:
            self.metrics.idempotency.labels("not_kept").inc()
            raise IdempotencyAnswerLost(
                f"the request with this {HEADER} ran, but its answer was not kept (too "
                "large for the store, or the object store lost it); it is not run "
                "again: use a new key to run it again",
                param=HEADER,
                code="idempotency_answer_not_kept",
            )
        return None

    @contextlib.asynccontextmanager
    async def running(self, ticket: Ticket) -> AsyncIterator[None]:
        """While the request runs: its claim renewed (a store with leases), and freed
        if it ends without ``finish`` (an exception, a cancellation)."""
        renewal = None
        if self.store.lease_s is not None:
            renewal = self._tasks.spawn(
                self._renew(ticket, self.store.lease_s), name="idempotency-renewal"
            )
        try:
            yield
        except BaseException:
            await asyncio.shield(self.store.drop(ticket.key, ticket.owner))
            raise
        finally:
            if renewal is not None:
                renewal.cancel()

    async def to_the_end(
        self, work: Coroutine[Any, Any, T], stopping: Callable[[], bool]
    ) -> T:
        """``work``'s result; if the caller is cancelled first (its client left, with
        handler cancellation on), ``work`` still runs to its end, so its answer is kept
        for the client's retry, and the caller waits for it before it leaves (its
        budget hold then settles what ``work`` cost). Unless ``stopping()`` (the
        gateway shuts down): then ``work`` is cancelled too, and its key freed."""
        task = self._tasks.spawn(work, name="idempotent-request")
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if stopping():
                task.cancel()
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # its client is gone: nobody else reads it
            raise

    async def _renew(self, ticket: Ticket, lease_s: float) -> None:
        while True:
            await asyncio.sleep(lease_s / 3)
            await self.store.renew(ticket.key, ticket.owner)

    def keeps(self, size: int) -> bool:
        """An answer body of ``size`` bytes is kept (in the store, or the bucket)."""
        return size <= self.config.max_answer_bytes or self.spill is not None

    async def finish(
        self, ticket: Ticket, answer: Answer, *, size: int | None = None
    ) -> None:
        """Keep ``answer`` for repeats if it is worth it, else free the key. ``size``:
        the body's, when ``answer`` was captured without it (one ``keeps`` refuses)."""
        if not worth_keeping(answer.status):
            await self.store.drop(ticket.key, ticket.owner)
            return
        ttl = self.config.ttl_s
        seen = Seen(ticket.fingerprint, answer)
        if (len(answer.body) if size is None else size) > self.config.max_answer_bytes:
            seen = Seen(ticket.fingerprint, lost=True)
            if self.spill is not None:
                spilled = f"{self.config.object_prefix}/{ticket.key}-{ticket.owner}"
                # The bucket down: the answer still goes to its client, not kept.
                with contextlib.suppress(StorageUnavailable):
                    await self.spill.put(spilled, await packed(answer))
                    seen = Seen(ticket.fingerprint, spilled=spilled)
        await self.store.keep(ticket.key, ticket.owner, seen, ttl)
        self.metrics.idempotency.labels("stored" if seen.answer else "not_kept").inc()

    async def close(self) -> None:
        await self._tasks.close()
        await self.store.close()
