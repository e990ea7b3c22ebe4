"""deploy/prometheus: promtool accepts the rules and their unit tests, and every series
they read is one the proxy exposes."""

from __future__ import annotations

from pathlib import Path

import msgspec

from tests.deploy.names import exposed_names, referenced_names
from tests.observability.procs import require_binary, run

RULES = Path("deploy/prometheus/rules.yaml")


def _exprs(path: Path) -> list[str]:
    doc = msgspec.yaml.decode(path.read_bytes())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def test_rules_read_only_exposed_series(repo_root: Path) -> None:
    exposed = exposed_names()
    exprs = _exprs(repo_root / RULES)
    used = set().union(*(referenced_names(e) for e in exprs))
    assert used, "rules must read imagegate series"
    assert used <= exposed, used - exposed


def test_every_alert_has_a_unit_test(repo_root: Path) -> None:
    rules = msgspec.yaml.decode((repo_root / RULES).read_bytes())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = msgspec.yaml.decode(
        (repo_root / "deploy/prometheus/tests.yaml").read_bytes()
    )
    tested = {
        t["alertname"]
        for case in tests["tests"]
        for t in case.get("alert_rule_test", [])
        if t["exp_alerts"]
    }
    assert alerts == tested
    assert len(alerts) >= 6


async def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    code, out, err = await run(promtool, "check", "rules", str(RULES))
    assert code == 0, out + err
    assert "SUCCESS" in out + err


async def test_promtool_test_rules() -> None:
    promtool = require_binary("promtool")
    code, out, err = await run(
        promtool, "test", "rules", "deploy/prometheus/tests.yaml"
    )
    assert code == 0, out + err
    assert "SUCCESS" in out + err
