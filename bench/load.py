"""One measurement: wrk drives one scenario against one target while /proc is sampled.

wrk (C, epoll, one thread) sends a fixed body read by ``wrk.lua`` and writes its
latency percentiles as JSON. Its own CPU use is recorded too, so a run whose load
generator saturated its core can be told apart from one limited by the proxy.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench import procs
from bench.scenarios import Scenario
from bench.targets import HERE, Target


@dataclass
class Measurement:
    target: str
    scenario: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_s: float  # the target's own CPU time during the run
    cpu_s_per_1k: float | None
    peak_rss_mib: float | None
    hwm_rss_mib: float | None
    generator_cpu_pct: float  # wrk's CPU time over wall time
    runs: int = 1
    # (max - min) / median over the runs: the noise this figure carries.
    rps_spread_pct: float = 0.0
    p50_spread_pct: float = 0.0
    # cpu_s_per_1k split into user space and the kernel (ms per request).
    user_ms: float | None = None
    sys_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (Debian package: wrk)")
    return found


def run_wrk(
    url: str,
    body: Path,
    content_type: str,
    *,
    concurrency: int,
    seconds: float,
    out: Path,
    cpus: str | None,
    stream: bool = False,
) -> tuple[dict[str, Any], float]:
    """Run wrk (or, for streams, bench.ttfp); return its JSON summary and CPU seconds."""
    before = _children_cpu()
    if stream:
        args = [sys.executable, "-m", "bench.ttfp", url, str(body), content_type,
                f"{max(seconds, 1):g}", str(out)]  # fmt: skip
    else:
        args = [wrk_binary(), "-t1", f"-c{concurrency}", f"-d{max(seconds, 1):g}s",
                "--timeout", "60s", "-s", str(HERE / "wrk.lua"), url]  # fmt: skip
    cmd = procs.pinned(args, cpus)
    env = {"BENCH_BODY": str(body), "BENCH_CTYPE": content_type, "BENCH_OUT": str(out)}
    out.unlink(missing_ok=True)
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    stdout, _ = proc.communicate(timeout=seconds + 120)
    cpu = _children_cpu() - before
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stdout.decode()[-2000:]}")
    summary: dict[str, Any] = msgspec.json.decode(out.read_bytes())
    return summary, cpu


def _children_cpu() -> float:
    # wrk is reaped by communicate(), so its CPU time joins our reaped children's total.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    target: Target,
    scenario: Scenario,
    body: Path,
    content_type: str,
    *,
    seconds: float,
    workdir: Path,
    client_cpus: str | None,
) -> Measurement:
    pids = target.pids()
    procs.reset_hwm(pids)
    user0, sys0 = procs.cpu_split(pids)
    start = time.perf_counter()
    with procs.rss_sampler(pids) as peak:
        summary, generator_cpu = run_wrk(
            target.url(scenario), body, content_type,
            concurrency=scenario.concurrency, seconds=seconds,
            out=workdir / "wrk.json", cpus=client_cpus,
            stream=scenario.kind == "stream",
        )  # fmt: skip
    wall = time.perf_counter() - start
    user1, sys1 = procs.cpu_split(pids)
    user, system = user1 - user0, sys1 - sys0
    cpu = user + system
    requests = int(summary["requests"])
    duration = summary["duration_us"] / 1e6
    errors = sum(int(v) for k, v in summary.items() if k.startswith("errors_"))
    return Measurement(
        target=target.name,
        scenario=scenario.name,
        concurrency=scenario.concurrency,
        seconds=round(duration, 3),
        requests=requests,
        errors=errors,
        rps=round(requests / duration, 1) if duration else 0.0,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        cpu_s=round(cpu, 3),
        cpu_s_per_1k=round(cpu / requests * 1000, 4) if pids and requests else None,
        peak_rss_mib=round(peak[0] / 1024, 1) if pids else None,
        hwm_rss_mib=round(procs.hwm_kib(pids) / 1024, 1) if pids else None,
        generator_cpu_pct=round(100 * generator_cpu / wall, 1),
        user_ms=round(user / requests * 1000, 4) if pids and requests else None,
        sys_ms=round(system / requests * 1000, 4) if pids and requests else None,
    )


def combine(runs: list[Measurement]) -> Measurement:
    """Median of each rate and percentile over repeated runs; peak RSS is the max."""
    if len(runs) == 1:
        return runs[0]

    def med(field: str) -> float:
        return float(statistics.median(getattr(m, field) for m in runs))

    def spread(field: str) -> float:
        values = [getattr(m, field) for m in runs]
        mid = statistics.median(values)
        return round(100 * (max(values) - min(values)) / mid, 1) if mid else 0.0

    def top(field: str) -> float | None:
        values = [getattr(m, field) for m in runs if getattr(m, field) is not None]
        return max(values) if values else None

    cpu = [m.cpu_s_per_1k for m in runs if m.cpu_s_per_1k is not None]

    def mid(field: str) -> float | None:
        values = [getattr(m, field) for m in runs if getattr(m, field) is not None]
        return round(statistics.median(values), 4) if values else None

    first = runs[0]
    return Measurement(
        target=first.target,
        scenario=first.scenario,
        concurrency=first.concurrency,
        seconds=round(sum(m.seconds for m in runs), 3),
        requests=sum(m.requests for m in runs),
        errors=sum(m.errors for m in runs),
        rps=round(med("rps"), 1),
        p50_ms=round(med("p50_ms"), 3),
        p99_ms=round(med("p99_ms"), 3),
        cpu_s=round(sum(m.cpu_s for m in runs), 3),
        cpu_s_per_1k=round(statistics.median(cpu), 4) if cpu else None,
        peak_rss_mib=top("peak_rss_mib"),
        hwm_rss_mib=top("hwm_rss_mib"),
        generator_cpu_pct=round(med("generator_cpu_pct"), 1),
        runs=len(runs),
        rps_spread_pct=spread("rps"),
        p50_spread_pct=spread("p50_ms"),
        user_ms=mid("user_ms"),
        sys_ms=mid("sys_ms"),
    )
