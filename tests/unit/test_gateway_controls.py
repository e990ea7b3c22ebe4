"""Config checks, the start-up exposure rule, hash-key, and the pure parts of limits,
retries and the breaker (with an injected clock: no sleeping)."""

from __future__ import annotations

import contextlib
import gc
import io
import random
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry, Gauge

from proxy.__main__ import main
from proxy.backpressure import Pressure
from proxy.client_keys import hash_key
from proxy.config import ConfigError, parse_config
from proxy.controls import Backpressure, ClientKey, exposure_error
from proxy.errors import CircuitOpen, Overloaded
from proxy.metrics import Metrics
from proxy.quotas import MemoryQuotas, month_reset
from proxy.resilience import (
    BreakerPolicy,
    CircuitBreaker,
    RetryPolicy,
    State,
    backoff_s,
    retry_after_s,
)
from tests.gateway import sha

PROVIDERS = {"openai": {}, "backup": {"type": "openai"}}


def _parse(**sections: Any) -> None:
    parse_config(msgspec.json.encode({"providers": PROVIDERS, **sections}))


@pytest.mark.parametrize(
    ("sections", "reason"),
    [
        ({"auth": "none", "keys": {"a": {"sha256": sha("k")}}}, "auth: none conflicts"),
        ({"keys": {"a": {"sha256": "not-hex"}}}, "keys.a.sha256: "),
        ({"keys": {"bad/name": {"sha256": sha("k")}}}, "keys"),
        ({"keys": {"a": {"sha256": sha("k"), "rpm": 0}}}, "keys.a.rpm: "),
        ({"keys": {"a": {"sha256": sha("k"), "models": []}}}, "keys.a.models: "),
        ({"redis_url": "http://localhost"}, "redis_url: must start with redis://"),
        ({"redis": {"budgets_on_error": "maybe"}}, "redis.budgets_on_error"),
        ({"retry": {"providers": {"nope": {}}}}, "retry.providers: unknown provider"),
        ({"breaker": {"providers": {"nope": {}}}}, "breaker.providers: unknown"),
        (
            {"fallbacks": {"openai/m": ["gone/m"]}},
            "'gone/m' must be '<provider>/<model>'",
        ),
        ({"fallbacks": {"openai": ["backup/m"]}}, "'openai' must be"),
        ({"fallbacks": {"openai/m": ["openai/m"]}}, "entries must be distinct"),
        ({"fallbacks": {"openai/m": ["backup/m", "backup/m"]}}, "must be distinct"),
        ({"backpressure": {"max_inflight": 0}}, "backpressure.max_inflight"),
        ({"backpressure": {"max_inflight_share": 0}}, "max_inflight_share"),
        ({"backpressure": {"max_inflight_share": 1.5}}, "max_inflight_share"),
    ],
)
def test_invalid_control_config_is_one_line_naming_the_key(
    sections: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        _parse(**sections)
    assert reason in str(exc.value)
    assert "\n" not in str(exc.value)


def test_valid_control_config_decodes() -> None:
    config = parse_config(
        msgspec.json.encode(
            {
                "providers": PROVIDERS,
                "keys": {"team-a": {"sha256": sha("k"), "rpm": 5}},
                "redis_url": "redis://127.0.0.1:6379/0",
                "retry": {"attempts": 2, "providers": {"backup": {"attempts": 1}}},
                "breaker": {"providers": {"openai": {"failures": 3}}},
                "fallbacks": {"openai/gpt-image-2": ["backup/gpt-image-2"]},
            }
        )
    )
    assert config.retry.for_provider("backup").attempts == 1
    assert config.retry.for_provider("openai").attempts == 2
    assert config.breaker.for_provider("openai").failures == 3
    assert config.breaker.for_provider("backup").failures == 5
    assert config.keys["team-a"].models == ["*"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]
)
def test_loopback_serves_without_keys(host: str) -> None:
    assert exposure_error(host=host, auth="keys", keys={}) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.internal"])
def test_other_addresses_need_keys_or_auth_none(host: str) -> None:
    refusal = exposure_error(host=host, auth="keys", keys={})
    assert refusal is not None
    assert f"refusing to listen on {host} without client keys" in refusal
    assert exposure_error(host=host, auth="none", keys={}) is None
    key = ClientKey(sha256=sha("k"))
    assert exposure_error(host=host, auth="keys", keys={"a": key}) is None


def test_start_refused_on_public_address_without_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers: {openai: {}}\n")
    assert main(["--config", str(path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imagegate: refusing to listen on 0.0.0.0")
    assert err.count("\n") == 1


def test_hash_key_makes_a_new_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash-key"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["key"].startswith("igk-")
    assert len(lines["key"]) > 40
    assert lines["sha256"] == hash_key(lines["key"]) == sha(lines["key"])


def test_hash_key_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("my-key\n"))
    assert main(["hash-key", "--stdin"]) == 0
    assert capsys.readouterr().out == f"sha256: {sha('my-key')}\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["hash-key", "--stdin"]) == 2


def test_retry_after_forms() -> None:
    now = 1_800_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 7, UTC), usegmt=True)
    assert retry_after_s("5", now=now) == 5
    assert retry_after_s(" 0.5 ", now=now) == 0.5
    assert retry_after_s(date, now=now) == pytest.approx(7)
    assert retry_after_s("-3", now=now) == 0
    assert retry_after_s(None, now=now) is None
    assert retry_after_s("soon", now=now) is None
    assert retry_after_s("inf", now=now) is None


def test_backoff_is_jittered_and_capped() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=3.0)
    rng = random.Random(1)
    waits = [backoff_s(policy, 5, rng) for _ in range(200)]
    assert all(0 <= w <= 3.0 for w in waits)
    assert len(set(waits)) == 200


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_memory_budgets_reset_with_the_utc_day_and_month() -> None:
    start = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    clock = Clock(start)
    store = MemoryQuotas(clock)
    rule = ClientKey(sha256=sha("k"), budget_usd_day=1.0, budget_usd_month=5.0)
    assert await store.admit("a", rule, "l1") is None
    await store.add_spend("a", 1.0)
    refusal = await store.admit("a", rule, "l2")
    assert refusal is not None
    assert refusal.reason == "budget_day"
    assert refusal.reset_at == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert refusal.retry_after_s == pytest.approx(60)
    clock.now += 120  # a new day, and a new month
    assert await store.admit("a", rule, "l3") is None
    for _ in range(5):
        await store.add_spend("a", 1.0)
        clock.now += 86400
    refusal = await store.admit("a", rule, "l4")
    assert refusal is not None
    assert refusal.reason == "budget_month"
    assert refusal.reset_at == datetime(2027, 2, 1, tzinfo=UTC).timestamp()
    assert month_reset(202612) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()


async def test_memory_rpm_window_slides() -> None:
    clock = Clock(1000.0)
    store = MemoryQuotas(clock)
    rule = ClientKey(sha256=sha("k"), rpm=2)
    assert await store.admit("a", rule, "1") is None
    clock.now += 30
    assert await store.admit("a", rule, "2") is None
    refusal = await store.admit("a", rule, "3")
    assert refusal is not None
    assert refusal.retry_after_s == pytest.approx(30)
    clock.now += 30  # the first request leaves the window
    assert await store.admit("a", rule, "4") is None
    await store.close()


def test_breaker_half_open_lets_one_probe_at_a_time() -> None:
    clock = Clock(0.0)
    registry = CollectorRegistry()
    gauge = Gauge("g", "g", registry=registry)
    breaker = CircuitBreaker(
        "p", BreakerPolicy(failures=1, cooldown_s=10), gauge, clock
    )

    def state() -> State:
        return breaker.state

    breaker.before()
    breaker.failure()
    assert state() is State.OPEN
    with pytest.raises(CircuitOpen) as exc:
        breaker.before()
    assert exc.value.headers["Retry-After"] == "10"
    clock.now = 10.0
    breaker.before()  # the probe
    assert state() is State.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.before()  # a second caller while the probe is out
    breaker.neutral()  # the probe was rate limited: no verdict, next caller probes
    breaker.before()
    breaker.success()
    assert state() is State.CLOSED
    assert registry.get_sample_value("g") == 0


def test_check_config_reports_control_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("providers: {openai: {}}\nfallbacks: {openai/m: [gone/m]}\n")
    assert main(["check-config", str(path)]) == 2
    assert "fallbacks: 'gone/m'" in capsys.readouterr().err
    path.write_text("providers: {openai: {}}\nauth: none\nserver: {host: 0.0.0.0}\n")
    assert main(["check-config", str(path)]) == 0


def test_workers_with_in_memory_key_limits_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "providers: {openai: {}}\n"
        f"keys: {{team: {{sha256: {sha('k')}, rpm: 10}}}}\n"
    )
    assert main(["--config", str(path), "--workers", "2", "--port", "8099"]) == 2
    assert "key limits are per worker without redis_url" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("inflight", "share", "slots"),
    [(256, 0.5, 128), (30, 0.1, 3), (3, 0.5, 2), (100, 0.001, 1), (5, 1.0, 5)],
)
def test_a_clients_share_of_the_slots_in_flight(
    inflight: int, share: float, slots: int
) -> None:
    config = Backpressure(max_inflight=inflight, max_inflight_share=share)
    pressure = Pressure(config, Metrics(CollectorRegistry()))
    assert pressure.inflight_share == slots
    with contextlib.ExitStack() as held:
        for _ in range(slots):
            held.enter_context(pressure.admit()).claim("key a")
        if slots < inflight:
            with pytest.raises(Overloaded), pressure.admit() as refused:
                refused.claim("key a")
            assert pressure.inflight == slots  # the refused one's slot is back
            with pressure.admit() as other:
                other.claim("key b")
    assert pressure.inflight == 0
    with pressure.admit() as again:
        again.claim("key a")  # every share is given back


def test_the_inflight_ceiling_is_exposed_beside_the_count() -> None:
    # ImagegateSaturated divides the count by this gauge: no threshold copied from config.
    metrics = Metrics(CollectorRegistry())
    Pressure(Backpressure(max_inflight=77), metrics)
    assert metrics.registry.get_sample_value("imagegate_inflight_limit") == 77


def test_a_slot_leaves_no_garbage_cycle() -> None:
    # One cycle per request was the collector's work at c=32 (slot <-> JSON reserve).
    pressure = Pressure(Backpressure(), Metrics(CollectorRegistry()))
    gc.collect()
    gc.disable()
    try:
        with pressure.admit() as slot:
            slot.claim("key a")
            slot.json.take(10)
            slot.take(10)
        del slot
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert pressure.inflight == 0
    assert pressure.json.used == pressure.temp.used == 0
