"""deploy/grafana: the dashboard is well-formed, covers what operators need, reads only
exposed series, and every query parses as PromQL (checked by promtool)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from tests.deploy.names import exposed_names, referenced_names
from tests.observability.procs import require_binary, run

DASHBOARD = Path("deploy/grafana/imagegate.json")
# Grafana's own variables, replaced by what Grafana would substitute.
_GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "6h", "$instance": ".*"}


def _dashboard(repo_root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = msgspec.json.decode((repo_root / DASHBOARD).read_bytes())
    return doc


def _queries(doc: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_dashboard_structure(repo_root: Path) -> None:
    doc = _dashboard(repo_root)
    assert doc["uid"] == "imagegate-overview"
    assert doc["title"]
    assert isinstance(doc["schemaVersion"], int)
    names = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "instance"} <= names
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        grid = p["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert p["datasource"]["uid"] == "${datasource}"
            assert p["fieldConfig"]["defaults"]["unit"]
    # No two panels overlap on the grid.
    cells = [
        (x, y)
        for p in doc["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))


def test_dashboard_covers_latency_overhead_errors_and_cost(repo_root: Path) -> None:
    queries = _queries(_dashboard(repo_root))
    text = "\n".join(queries)
    for needle in (
        "imagegate_request_duration_seconds_bucket",
        "imagegate_upstream_duration_seconds_bucket",
        "imagegate_overhead_seconds_bucket",
        "imagegate_upstream_errors_total",
        'code_class="5xx"',
        "sum by (key) (rate(imagegate_cost_usd_total",
        "sum by (provider, model) (rate(imagegate_cost_usd_total",
    ):
        assert needle in text, needle
    used = set().union(*(referenced_names(q) for q in queries))
    assert used <= exposed_names(), used - exposed_names()


async def test_every_query_parses(repo_root: Path, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules = []
    for i, query in enumerate(_queries(_dashboard(repo_root))):
        for var, value in _GRAFANA_VARS.items():
            query = query.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": query})
    path = tmp_path / "queries.yaml"
    doc = msgspec.yaml.encode({"groups": [{"name": "q", "rules": rules}]})
    await asyncio.to_thread(path.write_bytes, doc)
    code, out, err = await run(promtool, "check", "rules", str(path))
    assert code == 0, out + err
