"""The last-byte lag benchmark end to end at a tiny size: the real fake provider
process, imagegate and the aiohttp floor, both orders, the report. It proves the
harness works; it never asserts a timing."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bench import forward

CLIENTS = 3


@pytest.mark.timeout(120)
def test_tiny_run_measures_both_orders_through_each_peer(tmp_path: Path) -> None:
    rows = forward.run(
        tmp_path, clients=CLIENTS, upload=256 * 1024, hold=0.1, proxy_cpus=None,
        client_cpus=None,
    )  # fmt: skip
    assert [(r["peer"], r["order"]) for r in rows] == [
        (peer, order) for peer in forward.PEERS for order in forward.ORDERS
    ]
    for r in rows:
        assert r["ok"] == CLIENTS, r
        assert None not in (r["lag_min_ms"], r["lag_p50_ms"], r["lag_max_ms"]), r
        assert r["lag_min_ms"] <= r["lag_p50_ms"] <= r["lag_max_ms"]
    meta = {"machine": {"cpu": "test"}, "hold_s": 0.1, "loadavg_after": ["0", "0", "0"]}
    md = forward.write(tmp_path / "out", "tiny", rows, meta)
    assert "| imagegate | fields-first | 3 | 3 |" in md.read_text()
    # The floor passes a files-first form as it came: its prompt is found at the end.
    assert "| aiohttp | files-first | 3 | 3 |" in md.read_text()
    doc = msgspec.json.decode((tmp_path / "out" / "tiny.json").read_bytes())
    assert len(doc["results"]) == len(forward.PEERS) * len(forward.ORDERS)
