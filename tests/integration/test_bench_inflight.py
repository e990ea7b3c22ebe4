"""The in-flight benchmark end to end at a tiny size: real peers (nginx, the aiohttp
floor, imagegate), the real load client, /proc and /proc/net/netstat readings, the
report and its pictures. It proves the harness works; it never asserts a timing."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bench import inflight, plot
from tests.observability.procs import require_binary

CLIENTS = 6


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_binary("nginx")


@pytest.mark.timeout(180)
def test_tiny_bursts_through_every_peer(tmp_path: Path) -> None:
    bursts = [inflight.BY_NAME["held-1m"], inflight.BY_NAME["trickle-1m"],
              inflight.BY_NAME["refuse-1m"]]  # fmt: skip
    results = inflight.run_all(
        tmp_path, bursts=bursts, hold=0.6, settle=0.2, trickle=0.2, clients=CLIENTS,
        proxy_cpus=None, client_cpus=None, turns=True,
    )  # fmt: skip
    assert [(r["scenario"], r["target"]) for r in results] == [
        (b.name, peer) for b in bursts for peer in inflight.PEERS
    ]
    for r in results:
        refused = r["scenario"] == "refuse-1m" and r["target"] == "imagegate"
        if refused:
            # max_inflight is half the burst: the rest are answered 503 at once.
            assert r["ok"] == CLIENTS // 2, r
            assert r["errors"] == {"http_503": CLIENTS // 2}, r
            assert r["refused_max_ms"] is not None
            # Timed from the gateway's accept too, in wall and loop CPU time.
            assert r["refused_written_max_ms"] is not None, r
            assert r["refused_written_cpu_max_ms"] is not None, r
            assert r["accepted"] >= CLIENTS, r
        else:
            assert (r["ok"], r["errors"]) == (CLIENTS, {}), r
            assert r["refused_max_ms"] is None
        assert r["healthz_probes"] > 0, r
        assert r["healthz_errors"] == 0, r
        assert r["healthz_max_ms"] is not None
        assert r["peak_rss_mib"] >= r["idle_rss_mib"] > 0
        assert r["settled_rss_mib"] > 0
        assert r["cpu_ms_per_request"] is not None
        assert r["listen_overflows"] >= 0
        assert r["accept_queue_max"] >= 0
        assert r["runnable_wait_s"] >= 0
        if r["target"] == "imagegate":  # its loop probed (bench/turns.py)
            assert r["turn_cpu_max_ms"] is not None or r["turns"] == [], r
            assert r["healthz_written_max_ms"] is not None, r
        assert len(r["series"]["latency"]) == r["ok"]
        assert r["series"]["rss"]

    pictures = plot.draw(tmp_path / "out", "tiny", results)
    assert set(pictures) == {b.name for b in bursts}
    for file in pictures.values():
        assert (tmp_path / "out" / file).read_bytes().startswith(b"\x89PNG")
    meta = {"machine": {"cpu": "test"}, "hold_s": 0.6, "settle_s": 0.2,
            "loadavg_after": ["0", "0", "0"]}  # fmt: skip
    md = inflight.write(tmp_path / "out", "tiny", results, meta, pictures)
    text = md.read_text()
    assert text.count("| imagegate |") == 3
    assert "![refuse-1m](tiny-refuse-1m.png)" in text
    doc = msgspec.json.decode((tmp_path / "out" / "tiny.json").read_bytes())
    assert len(doc["results"]) == 9
    # Every peer was stopped: imagegate's upload directory went with it.
    assert not list(tmp_path.glob("imagegate-*"))
