"""The ``idempotency:`` section: how ``Idempotency-Key`` answers are kept
(``proxy.idempotency``). Kept apart from ``proxy.config`` to keep each module small."""

from __future__ import annotations

from typing import Annotated

import msgspec

from proxy.config_base import ConfigBase, NonNegSeconds, PositiveInt, Seconds

MiB = 1024 * 1024


class IdempotencyConfig(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """Answers kept for ``Idempotency-Key`` repeats: in Redis when ``redis_url`` is
    set (shared by replicas), else in this process's memory."""

    enabled: bool = True
    # How long an answer is replayed; the key is free again after it.
    ttl_s: Seconds = 86400.0
    # A repeat that arrives while the first request runs waits this long for its
    # answer, then gets 409 idempotency_key_in_use with Retry-After; 0: at once.
    wait_s: NonNegSeconds = 30.0
    # Redis: a running request's claim lasts this long unless its replica renews it
    # (every third of it), so a replica that dies frees its keys after at most this.
    lease_s: Annotated[float, msgspec.Meta(ge=1)] = 30.0
    # Memory: at most this many keys and this many answer bytes; the oldest answers
    # are forgotten first.
    max_entries: PositiveInt = 10_000
    max_bytes: PositiveInt = 256 * MiB
    # An answer larger than this goes to the object store when files.backend is s3
    # (under object_prefix); without one it is not kept, and a repeat gets 409
    # idempotency_answer_not_kept (the request is never run a second time).
    max_answer_bytes: PositiveInt = 16 * MiB
    object_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._/-]{1,200}$")] = (
        "imagegate/idempotency"
    )

    def __post_init__(self) -> None:
        if self.max_answer_bytes > self.max_bytes:
            raise ValueError("max_answer_bytes must not be above max_bytes")
