"""The benchmark harness end to end on tiny counts: it proves the harness works (real
processes, real wrk, real /proc readings); it never asserts a timing."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bench import report
from bench.run import TARGETS, run_all
from bench.scenarios import BY_NAME
from tests.observability.procs import require_binary


@pytest.fixture(autouse=True)
def _tools() -> None:
    # The harness drives wrk and nginx; without them the test fails saying how to get them.
    require_binary("wrk")
    require_binary("nginx")


def test_quick_harness_measures_every_target(tmp_path: Path) -> None:
    scenarios = [BY_NAME["small-c1"], BY_NAME["upload1-c16"], BY_NAME["stream-c1"]]
    results = run_all(
        tmp_path,
        scenarios=scenarios,
        targets=TARGETS,
        seconds=1,
        warmup=0,
        proxy_cpus=None,
        client_cpus=None,
    )
    assert [(m.scenario, m.target) for m in results] == [
        (s.name, t)
        for s in scenarios
        for t in ("direct", "nginx", "aiohttp", "imagegate")
    ]
    for m in results:
        assert m.requests > 0, m
        assert m.errors == 0, m
        if m.target == "direct":
            assert m.cpu_s_per_1k is None
            assert m.peak_rss_mib is None
            assert m.user_ms is None
            assert m.sys_ms is None
        else:
            assert m.cpu_s_per_1k is not None
            # The user / kernel split adds up to the CPU figure (each run's
            # rounding and the median over one run aside).
            assert m.user_ms is not None
            assert m.sys_ms is not None
            assert m.user_ms + m.sys_ms == pytest.approx(m.cpu_s_per_1k, abs=0.01)
            assert m.peak_rss_mib is not None
            assert m.peak_rss_mib > 0

    rows = report.derive(results)
    ours = [r for r in rows if r["target"] == "imagegate"]
    assert all("added_p50_ms" in r and "rps_vs_nginx" in r for r in ours)
    # imagegate's CPU over the aiohttp floor's: what its own work costs.
    assert all(r["cpu_vs_aiohttp"] > 0 for r in ours)
    meta = {
        "machine": report.machine(), "seconds": 1, "latency_ms": 2.0,
        "proxy_cpus": None, "client_cpus": None, "loadavg_after": ["0", "0", "0"],
    }  # fmt: skip
    md = report.write(tmp_path / "out", "quick", rows, meta)
    text = md.read_text()
    assert text.count("| imagegate |") == 3
    assert "user / sys ms per req" in text
    doc = msgspec.json.decode((tmp_path / "out" / "quick.json").read_bytes())
    assert len(doc["results"]) == 12
    # imagegate was stopped cleanly: its upload directory went with it.
    assert not list(tmp_path.glob("imagegate-*"))
