"""Config of async jobs and their signed webhooks (``jobs:``); declarations only."""

from __future__ import annotations

from typing import Annotated

import msgspec

from proxy.config_base import ConfigBase, PositiveInt, Seconds

EnvName = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
]
WebhookUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$", max_length=2048)]


class KeyWebhook(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """One client key's webhooks: the URL used when a request names none, and the
    environment variable holding the signing secret (``whsec_`` + base64)."""

    url: WebhookUrl | None = None
    secret_env: EnvName | None = None


class Webhooks(ConfigBase, frozen=True, forbid_unknown_fields=True):
    # Per client key name ("anonymous" without client keys).
    keys: dict[str, KeyWebhook] = msgspec.field(default_factory=dict)
    timeout_s: Seconds = 10.0  # one delivery attempt
    # Attempts go on, with exponential backoff, until this long after the first.
    retry_for_s: Seconds = 3600.0
    backoff_base_s: Seconds = 2.0
    backoff_max_s: Seconds = 300.0
    # Deliveries retrying at once in a process; past it, workers wait to take jobs.
    max_pending: PositiveInt = 256


class Jobs(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """``Prefer: respond-async`` (proxy/jobs). With ``redis_url`` the jobs are queued
    in a Redis stream every replica reads; without it they run in this process and
    are lost when it stops."""

    enabled: bool = True
    # Jobs run at once per process.
    workers: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 8
    # Jobs waiting at most (with Redis, those running count too); past it, 503.
    max_queued: PositiveInt = 1000
    # Jobs of one client key not ended yet, at most: past it a 429 (the 202 is not
    # counted by the key's quotas, so this bounds what one key can queue).
    max_open_per_key: PositiveInt = 100
    # A job record (and its result) is kept this long after it was created.
    ttl_s: Seconds = 86400.0
    # Without Redis: records kept in memory at most (the oldest ended ones go first).
    max_kept: PositiveInt = 1000
    # A running job's claim: renewed every lease_s / 3 while it runs; a replica that
    # died leaves its jobs to another once it has not been renewed for this long.
    lease_s: Seconds = 60.0
    # Runs of one job at most: a job whose replica died while running it this many
    # times fails (500 job_abandoned) instead of running (and costing) again.
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    # How often a running job looks for a cancellation made on another replica.
    poll_s: Seconds = 1.0
    webhooks: Webhooks = Webhooks()
