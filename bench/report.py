"""Results as JSON and a markdown table, with added latency over direct, ratios to
nginx (a proxy's figure divided by nginx's), and imagegate's CPU over the aiohttp
floor's (what imagegate's own work costs on top of the framework)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from bench.load import Measurement
from bench.scenarios import BY_NAME


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 2)


def derive(results: list[Measurement]) -> list[dict[str, Any]]:
    """Each measurement plus added latency over direct and ratios to nginx."""
    index = {(m.scenario, m.target): m for m in results}
    rows = []
    for m in results:
        row = m.as_dict()
        direct = index.get((m.scenario, "direct"))
        nginx = index.get((m.scenario, "nginx"))
        floor = index.get((m.scenario, "aiohttp"))
        if direct is not None and m.target != "direct":
            row["added_p50_ms"] = round(m.p50_ms - direct.p50_ms, 3)
            row["added_p99_ms"] = round(m.p99_ms - direct.p99_ms, 3)
        if nginx is not None and m.target not in ("direct", "nginx"):
            row["rps_vs_nginx"] = _ratio(m.rps, nginx.rps)
            row["cpu_vs_nginx"] = _ratio(m.cpu_s_per_1k, nginx.cpu_s_per_1k)
            if direct is not None:
                row["added_p50_vs_nginx"] = _ratio(
                    m.p50_ms - direct.p50_ms, nginx.p50_ms - direct.p50_ms
                )
        if floor is not None and m.target == "imagegate":
            row["cpu_vs_aiohttp"] = _ratio(m.cpu_s_per_1k, floor.cpu_s_per_1k)
        rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except OSError:
            return "absent"
        return (done.stdout + done.stderr).strip().splitlines()[0]

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "-v"]),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _split(row: dict[str, Any]) -> str:
    user, system = row.get("user_ms"), row.get("sys_ms")
    if user is None or system is None:
        return "-"
    return f"{user:.3f} / {system:.3f}"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "| scenario | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| CPU s/1k req | peak RSS MiB | req/s vs nginx | added p50 vs nginx "
        "| CPU vs nginx | CPU vs aiohttp | user / sys ms per req | errors | wrk CPU % "
        "| spread % req/s, p50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        title = (
            BY_NAME[r["scenario"]].title if r["scenario"] in BY_NAME else r["scenario"]
        )
        lines.append(
            f"| {title} | {r['target']} | {r['rps']:.0f} | {r['p50_ms']:.3f} "
            f"| {r['p99_ms']:.3f} | {_cell(r.get('added_p50_ms'), '{:.3f}')} "
            f"| {_cell(r.get('added_p99_ms'), '{:.3f}')} "
            f"| {_cell(r['cpu_s_per_1k'], '{:.3f}')} "
            f"| {_cell(r['peak_rss_mib'], '{:.1f}')} "
            f"| {_cell(r.get('rps_vs_nginx'), '{:.2f}')} "
            f"| {_cell(r.get('added_p50_vs_nginx'), '{:.2f}')} "
            f"| {_cell(r.get('cpu_vs_nginx'), '{:.2f}')} "
            f"| {_cell(r.get('cpu_vs_aiohttp'), '{:.2f}')} | {_split(r)} | {r['errors']} "
            f"| {r['generator_cpu_pct']:.0f} "
            f"| {r['rps_spread_pct']:.0f}, {r['p50_spread_pct']:.0f} |"
        )
    head = (
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
        f"Linux {meta['machine']['kernel']}, Python {meta['machine']['python']}, "
        f"{meta['machine']['nginx']}, {meta['machine']['wrk']}. "
        f"Median of {meta.get('repeat', 1)} runs of {meta['seconds']:g} s, fake upstream latency {meta['latency_ms']:g} ms, "
        f"proxies on CPU {meta['proxy_cpus']}, wrk and the fake upstream on CPU "
        f"{meta['client_cpus']}. Load average before/after: "
        f"{' '.join(meta['machine']['loadavg'])} / {' '.join(meta['loadavg_after'])}."
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def write(
    out_dir: Path, name: str, rows: list[dict[str, Any]], meta: dict[str, Any]
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "results": rows}
    (out_dir / f"{name}.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(doc))
    )
    path = out_dir / f"{name}.md"
    path.write_text(markdown(rows, meta))
    return path
