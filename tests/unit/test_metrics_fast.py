"""The hot path's metric updates (``adder``, ``setter``, ``Observer``) bypass
``prometheus_client``'s per-call checks; what they record must be what the public
``inc``/``dec``/``set``/``observe`` record, in one process and in multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from proxy.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]

# Amounts on, between and beyond the bounds of both histograms' buckets.
AMOUNTS = (0.0, 0.0001, 0.00011, 0.005, 0.0051, 0.7, 1.0, 299.0, 300.0, 301.0, 1e9)


def _public(m: Metrics) -> None:
    m.requests.labels("/v3/images/edits", "openai", "2xx", "k").inc()
    m.upstream_sent_bytes.labels("openai").inc(65536)
    m.inflight.inc()
    m.inflight.inc()
    m.inflight.dec()
    m.spooled_bytes.inc(100)
    m.spooled_bytes.dec(40)
    m.temp_reserved_bytes.set(12345)
    m.temp_reserved_bytes.set(7)
    for amount in AMOUNTS:
        m.request_duration.labels("/v3/images/edits").observe(amount)
        m.overhead.labels("/v3/images/edits").observe(amount)


def _fast(m: Metrics) -> None:
    from proxy.metrics import adder, setter

    m.add(m.requests, "/v3/images/edits", "openai", "2xx", "k")(1)
    m.add(m.upstream_sent_bytes, "openai")(65536)
    m.inflight_add(1)
    m.inflight_add(1)
    m.inflight_add(-1)
    spooled = adder(m.spooled_bytes)
    spooled(100)
    spooled(-40)
    temp = setter(m.temp_reserved_bytes)
    temp(12345)
    temp(7)
    for amount in AMOUNTS:
        m.observe(m.request_duration, "/v3/images/edits")(amount)
        m.observe(m.overhead, "/v3/images/edits")(amount)


def _text(registry: CollectorRegistry) -> list[str]:
    # Without the _created timestamps, which differ between the two registries.
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def test_fast_updates_record_what_the_public_api_records() -> None:
    public, fast = CollectorRegistry(), CollectorRegistry()
    _public(Metrics(public))
    _fast(Metrics(fast))
    assert _text(fast) == _text(public)
    assert any(
        line.startswith("imagegate_overhead_seconds_bucket") for line in _text(fast)
    )


def test_kept_updaters_are_reused() -> None:
    m = Metrics(CollectorRegistry())
    assert m.add(m.requests, "a", "b", "2xx", "k") is m.add(
        m.requests, "a", "b", "2xx", "k"
    )
    assert m.observe(m.overhead, "a") is m.observe(m.overhead, "a")


_CHILD = """
import sys
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from proxy.metrics import Metrics
sys.path.insert(0, {tests!r})
from test_metrics_fast import {fn}
{fn}(Metrics(CollectorRegistry(), multiproc_dir={dir!r}))
merged = CollectorRegistry()
multiprocess.MultiProcessCollector(merged, path={dir!r})
sys.stdout.write(generate_latest(merged).decode())
"""


def _multiprocess(fn: str, tmp: Path) -> str:
    tmp.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp), "PYTHONPATH": str(ROOT)}
    code = _CHILD.format(tests=str(Path(__file__).parent), fn=fn, dir=str(tmp))
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_fast_updates_in_multiprocess_mode(tmp_path: Path) -> None:
    public = _multiprocess("_public", tmp_path / "public")
    fast = _multiprocess("_fast", tmp_path / "fast")
    assert "imagegate_inflight_requests 1.0" in public
    assert sorted(fast.splitlines()) == sorted(public.splitlines())
