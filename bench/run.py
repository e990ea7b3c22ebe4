"""``python -m bench.run [--quick] [--seconds S] [--scenarios a,b] [--targets a,b]``.

Then, unless ``--inflight off``, the in-flight bursts (``bench/inflight.py``), unless
``--stall off`` the loop stalls of single large requests (``bench/stall.py``), and
unless ``--forward off`` the last-byte lag of uploads in both orders
(``bench/forward.py``): each target of issue 19 from one invocation, its files named
``<name>-inflight``, ``<name>-stall``, ``<name>-forward[-paced]``.

Runs every scenario against the fake upstream directly, nginx, the aiohttp floor
(``bench/floor.py``) and imagegate in one invocation, interleaving the targets within
each scenario so that drift in the machine's load hits them all alike, and writes
``bench/results/<name>.{md,json}``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import report
from bench.load import Measurement, combine, measure
from bench.scenarios import BY_NAME, Scenario, write_body
from bench.targets import HERE, stack

TARGETS = ("direct", "nginx", "aiohttp", "imagegate")
QUICK_SCENARIOS = ("small-c1", "small-c64", "upload1-c16")


def run_all(
    workdir: Path,
    *,
    scenarios: Sequence[Scenario],
    targets: Sequence[str] = TARGETS,
    seconds: float,
    warmup: float,
    repeat: int = 1,
    latency_ms: float = 2.0,
    proxy_cpus: str | None = "1",
    client_cpus: str | None = "0",
    workers: int = 1,
) -> list[Measurement]:
    results: list[Measurement] = []
    with stack(
        workdir,
        names=tuple(targets),
        latency_ms=latency_ms,
        proxy_cpus=proxy_cpus,
        client_cpus=client_cpus,
        workers=workers,
    ) as running:
        for scenario in scenarios:
            body, content_type = write_body(scenario, workdir)
            runs: dict[str, list[Measurement]] = {name: [] for name in targets}
            # Interleaved: target order within a round, rounds repeated, so a burst of
            # load from elsewhere on the machine hits every target alike.
            for _ in range(repeat):
                for name in targets:
                    target = running.targets[name]
                    kwargs: dict[str, Any] = {
                        "workdir": workdir, "client_cpus": client_cpus,
                    }  # fmt: skip
                    if warmup > 0:
                        measure(target, scenario, body, content_type,
                                seconds=warmup, **kwargs)  # fmt: skip
                    m = measure(target, scenario, body, content_type,
                                seconds=seconds, **kwargs)  # fmt: skip
                    runs[name].append(m)
                    _progress(m)
            results += [combine(runs[name]) for name in targets]
            body.unlink()
    return results


def _progress(m: Measurement) -> None:
    rss = f" peak RSS {m.peak_rss_mib} MiB" if m.peak_rss_mib is not None else ""
    if m.user_ms is not None and m.sys_ms is not None:
        rss += f"  user/sys {m.user_ms:.3f}/{m.sys_ms:.3f} ms/req"
    sys.stderr.write(
        f"{m.scenario:14} {m.target:9} {m.rps:8.0f} req/s  p50 {m.p50_ms:7.3f} ms  "
        f"p99 {m.p99_ms:7.3f} ms  errors {m.errors}{rss}  wrk {m.generator_cpu_pct}%\n"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 3 scenarios, 2 s each"
    )
    p.add_argument("--seconds", type=float, help="seconds per measurement (default 10)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per measurement")
    p.add_argument("--repeat", type=int, default=1, help="runs per figure (median)")
    p.add_argument("--scenarios", help="comma-separated: " + ",".join(BY_NAME))
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument(
        "--latency-ms", type=float, default=2.0, help="fake upstream latency"
    )
    p.add_argument("--proxy-cpus", default="1", help="taskset list for the proxies")
    p.add_argument("--client-cpus", default="0", help="for wrk and the fake upstream")
    p.add_argument("--workers", type=int, default=1, help="imagegate --workers N")
    p.add_argument(
        "--inflight",
        choices=("auto", "quick", "full", "off"),
        default="auto",
        help="then the in-flight bursts (bench/inflight.py): auto is quick with "
        "--quick, full otherwise",
    )
    p.add_argument(
        "--forward",
        choices=("auto", "quick", "full", "off"),
        default="auto",
        help="then the last-byte lag (bench/forward.py): quick is 40 x 1 MiB, full "
        "250 x 8 MiB unpaced and at 0.5 MiB/s; auto is quick with --quick, full "
        "otherwise",
    )
    p.add_argument(
        "--stall",
        choices=("auto", "quick", "full", "off"),
        default="auto",
        help="then the loop stalls (bench/stall.py): quick is json64 and multipart16 "
        "once, full every scenario 3 times; auto is quick with --quick, full otherwise",
    )
    p.add_argument("--name", help="results file stem (default: results, or quick)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.scenarios.split(",") if args.scenarios else None
    if names is None:
        names = list(QUICK_SCENARIOS) if args.quick else list(BY_NAME)
    scenarios = [BY_NAME[n] for n in names]
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    with tempfile.TemporaryDirectory(prefix="imagegate-bench-") as tmp:
        meta: dict[str, Any] = {
            "machine": report.machine(), "seconds": seconds, "warmup": warmup,
            "latency_ms": args.latency_ms, "repeat": args.repeat, "workers": args.workers, "proxy_cpus": args.proxy_cpus,
            "client_cpus": args.client_cpus,
        }  # fmt: skip
        results = run_all(
            Path(tmp), scenarios=scenarios, targets=args.targets.split(","),
            seconds=seconds, warmup=warmup, repeat=args.repeat, latency_ms=args.latency_ms,
            proxy_cpus=args.proxy_cpus, client_cpus=args.client_cpus,
            workers=args.workers,
        )  # fmt: skip
    meta["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    name = args.name or ("quick" if args.quick else "results")
    path = report.write(args.out, name, report.derive(results), meta)
    sys.stdout.write(path.read_text())
    mode = (
        args.inflight
        if args.inflight != "auto"
        else ("quick" if args.quick else "full")
    )
    if mode != "off":
        from bench import inflight

        passed = ["--proxy-cpus", args.proxy_cpus, "--client-cpus", args.client_cpus,
                  "--workers", str(args.workers), "--out", str(args.out)]  # fmt: skip
        passed += ["--name", f"{name}-inflight"]
        failed = inflight.main([*passed, *(["--quick"] if mode == "quick" else [])])
        if failed:
            return failed
    failed = _stall(args, name)
    if failed:
        return failed
    lag = (
        args.forward if args.forward != "auto" else ("quick" if args.quick else "full")
    )
    if lag != "off":
        from bench import forward

        pins = ["--proxy-cpus", args.proxy_cpus, "--client-cpus", args.client_cpus,
                "--out", str(args.out)]  # fmt: skip
        small = ["--clients", "40", "--upload", str(1024 * 1024), "--hold", "1",
                 "--name", f"{name}-forward"]  # fmt: skip
        if lag == "quick":
            return forward.main([*pins, *small])
        # As fast as the clients go (the kernel's socket buffers hold much of each
        # upload), then at 0.5 MiB/s each, as clients on real links send.
        paced = ["--rate", str(512 * 1024), "--name", f"{name}-forward-paced"]
        return forward.main([*pins, "--name", f"{name}-forward"]) or forward.main(
            [*pins, *paced]
        )
    return 0


def _stall(args: argparse.Namespace, name: str) -> int:
    """``bench.stall`` in its own processes (it pins them itself), its lines kept as
    ``<name>-stall.txt`` beside the other results of this run."""
    mode = args.stall if args.stall != "auto" else ("quick" if args.quick else "full")
    if mode == "off":
        return 0
    picked = ["--repeat", "1", "--only", "json64", "multipart16"]
    cmd = [sys.executable, "-m", "bench.stall", *(picked if mode == "quick" else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    (args.out / f"{name}-stall.txt").write_text(done.stdout)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
