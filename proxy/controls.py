"""Config sections of the gateway controls: client keys, per-key quotas (Redis),
fallbacks and backpressure, and the checks that span sections.

Only declarations and pure validation live here; each control's behaviour lives in its
own module (``client_keys``, ``quotas``, ``fallback``, ``backpressure``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Literal

import msgspec

from proxy.config_base import ConfigBase, NonNegSeconds, PositiveInt, Seconds

Usd = Annotated[float, msgspec.Meta(gt=0)]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
KeyName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
FailMode = Literal["open", "closed"]


class ClientKey(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """One client key, known only by the SHA-256 of the key (``imagegate hash-key``)."""

    sha256: Sha256Hex
    # fnmatch patterns over "provider/model", e.g. "openai/*".
    models: Annotated[list[str], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["*"]
    )
    rpm: PositiveInt | None = None
    concurrency: PositiveInt | None = None
    budget_usd_day: Usd | None = None
    budget_usd_month: Usd | None = None


class RedisSettings(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """How the quotas behave when Redis (``redis_url``) cannot be reached."""

    # Rate and concurrency quotas keep serving through an outage by default; budgets
    # stop spending money the gateway can no longer count.
    rates_on_error: FailMode = "open"
    budgets_on_error: FailMode = "closed"
    timeout_s: Seconds = 0.5
    # After a failed call Redis is not asked again for this long: the fail mode
    # applies at once instead of every request waiting out timeout_s.
    recheck_s: NonNegSeconds = 1.0
    prefix: str = "imagegate"
    # A concurrency slot of a replica that died frees itself after this long.
    lease_s: Seconds = 900.0


class Backpressure(ConfigBase, frozen=True, forbid_unknown_fields=True):
    # Edits held upstream for 10-60 s each: 512 per process fits the 2 GiB the
    # Kubernetes overlays give it (README "Sizing"); past it, 503 and scale out.
    max_inflight: PositiveInt = 512
    # The part of max_inflight one client (key, or address without keys) may hold:
    # at most ceil(share x max_inflight) slots, at least 1; 1 turns the share off.
    max_inflight_share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    # Multipart body bytes received (after inflating) by requests in flight.
    max_temp_bytes: PositiveInt = 4 * 1024**3
    # JSON bodies are held and decoded in memory: each reserves 2x its bytes received
    # (the body and its decoded strings) from this (README "Sizing").
    max_json_memory_bytes: PositiveInt = 256 * 1024**2
    # The part of max_temp_bytes (and of max_json_memory_bytes) one client (key, or address without keys) may hold
    # while its other requests hold some; 1 turns the share off.
    max_temp_share: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    retry_after_s: PositiveInt = 1
    # Request bodies being read at once: beyond it, a body's chunks wait unread
    # (its socket paused) until a turn is free; a turn is given back whenever the
    # body waits for its client (proxy.bodystream.BodyStream.read), so one turn of
    # the event loop serves fewer uploads and /healthz or a 503 waits less.
    max_body_reads: PositiveInt = 64
    # Pieces of providers' replies relayed per turn of the event loop (at most
    # ~256 KiB each, ~0.2-0.4 ms of CPU): the rest wait a turn, their upstream
    # sockets paused, so 1,000 replies arriving together do not make one long turn.
    relay_steps_per_turn: PositiveInt = 32


def validate(
    *,
    auth: str,
    keys: Mapping[str, ClientKey],
    redis_url: str | None,
    providers: Sequence[str],
    fallbacks: Mapping[str, Sequence[str]],
    overrides: Mapping[str, Collection[str]],
) -> None:
    """Cross-section checks; raises ValueError with a one-line reason naming the key."""
    if auth == "none" and keys:
        raise ValueError("auth: none conflicts with configured keys; remove one")
    if "anonymous" in keys:
        raise ValueError("keys: 'anonymous' is reserved for requests without a key")
    if redis_url is not None and not redis_url.startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ValueError("redis_url: must start with redis://, rediss:// or unix://")
    known = set(providers)
    # Sections with per-provider overrides ("retry", "breaker") and the names they use.
    for section, names in overrides.items():
        for name in names:
            if name not in known:
                raise ValueError(f"{section}.providers: unknown provider {name!r}")
    for model, chain in fallbacks.items():
        for entry in (model, *chain):
            provider, _, model_id = entry.partition("/")
            if not model_id or provider not in known:
                raise ValueError(
                    f"fallbacks: {entry!r} must be '<provider>/<model>' with a "
                    "configured provider"
                )
        if model in chain or len(set(chain)) != len(chain):
            raise ValueError(f"fallbacks.{model}: entries must be distinct")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_error(
    *, host: str, auth: str, keys: Mapping[str, ClientKey]
) -> str | None:
    """Secure by default: without client keys only a loopback address is served."""
    if keys or auth == "none" or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host} without client keys: configure keys, "
        "listen on 127.0.0.1, or set 'auth: none' to serve without authentication"
    )
