"""``python -m bench.inflight``: bursts of held image edits, the load image models make.

Each scenario sends C edits at once (one connection each, ``bench/inflight_client.py``)
through each peer (nginx with request buffering off, the aiohttp floor, imagegate) to
the fake upstream, which holds every edit ``--hold`` seconds before answering the
1.5 MB reply (or trickling it, ``trickle-*``). While the burst runs, ``/healthz`` is
probed back to back and the peer's RSS sampled; after it, RSS is sampled ``--settle``
seconds more. Per peer: successes and errors by kind, the time 503 refusals took, the
worst ``/healthz`` answer, peak / after-load / settled RSS, RSS per edit in flight, CPU
per request and the kernel's listen overflows. Writes ``bench/results/<name>.{md,json}``
and a PNG per scenario (``bench/plot.py``). Every peer and the fake upstream are started
afresh for each scenario, so one scenario's leftovers do not show in the next.

    python -m bench.inflight                        # the default sizes (~15 min)
    python -m bench.inflight --quick                # 40 clients, 1 s hold: under a minute
    python -m bench.inflight --scenarios held-1m --clients 500 --hold 5 --settle 10
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec

from bench import gateway_log, procs, report
from bench.inflight_client import raise_nofile
from bench.probe import Probe, Sampler, netstat, wait_seconds
from bench.scenarios import MiB, multipart, png_bytes
from bench.targets import HERE, Target, stack

PEERS = ("nginx", "aiohttp", "imagegate")


@dataclass(frozen=True)
class Burst:
    name: str
    title: str
    clients: int
    upload: int  # bytes of the one image each edit sends
    reply: str = "big"  # "big" (1.5 MB at once) or "trickle" (1.5 MB, slowly)
    # The share of the clients imagegate admits at once (backpressure.max_inflight):
    # below 1, the rest are refused with 503 and the refusals' latency is measured.
    admit: float = 1.0

    @property
    def model(self) -> str:
        return f"{self.reply}/gpt-image-2"


BURSTS = (
    Burst("held-1m", "1 MiB edits held upstream", 2000, MiB),
    # Issue 19's memory per in-flight edit is stated at 1,000 in flight.
    Burst("held-1m-1k", "1 MiB edits held upstream, C = 1,000", 1000, MiB),
    Burst("held-8m", "8 MiB edits held upstream", 250, 8 * MiB),
    Burst("trickle-1m", "1 MiB edits, reply trickled upstream", 1000, MiB, "trickle"),
    Burst("refuse-1m", "1 MiB edits, half refused (503)", 2000, MiB, admit=0.5),
)
BY_NAME = {b.name: b for b in BURSTS}


def body(burst: Burst) -> tuple[bytes, str]:
    fields = {"model": burst.model, "prompt": "Put a small red hat on the cat"}
    return multipart(fields, [("image", png_bytes(burst.upload))])


def overrides(burst: Burst, clients: int) -> dict[str, dict[str, object]]:
    """imagegate's config for the burst: every client from 127.0.0.1 is one client
    to the per-client shares, so the shares are off; max_inflight admits the burst."""
    return {
        "backpressure": {
            "max_inflight": max(1, math.ceil(clients * burst.admit)),
            "max_inflight_share": 1.0,
            "max_temp_share": 1.0,
        },
    }


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def run_one(
    target: Target, burst: Burst, body_path: Path, content_type: str, *,
    clients: int, hold: float, settle: float, workdir: Path, client_cpus: str | None,
    probe_port: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One burst through one peer; its figures and its time series."""
    pids = target.pids()
    url = (
        f"http://127.0.0.1:{target.port}/v3/images/edits"
        if target.name == "imagegate"
        else f"http://127.0.0.1:{target.port}/{burst.reply}/v1/images/edits"
    )
    time.sleep(0.5)
    idle = procs.rss_kib(pids)
    net0, cpu0, wait0 = netstat(), procs.cpu_seconds(pids), wait_seconds(pids)
    out = workdir / "inflight.json"
    out.unlink(missing_ok=True)
    timeout = hold * 3 + 120
    cmd = [sys.executable, "-m", "bench.inflight_client", url, str(body_path),
           content_type, str(clients), str(timeout), str(out)]  # fmt: skip
    sampler = Sampler(pids, port=target.port).start()
    start = time.monotonic()
    with Probe(probe_port or target.port) as probe:
        done = subprocess.run(
            procs.pinned(cmd, client_cpus), capture_output=True, timeout=timeout + 60
        )
    end = time.monotonic()
    cpu, net1 = procs.cpu_seconds(pids) - cpu0, netstat()
    waited = wait_seconds(pids) - wait0
    after = procs.rss_kib(pids)
    if done.returncode != 0:
        sampler.stop()
        raise RuntimeError(f"the load client failed: {done.stderr.decode()[-2000:]}")
    time.sleep(settle)
    sampler.stop()
    settled = procs.rss_kib(pids)
    rows = msgspec.json.decode(out.read_bytes())
    ok = [r for r in rows if r[4] == 200]
    errors: dict[str, int] = {}
    for r in rows:
        if r[4] != 200:
            kind = r[5] or f"http_{r[4]}"
            errors[kind] = errors.get(kind, 0) + 1
    refused = [r[2] - r[1] for r in rows if r[4] == 503]
    latency = [r[3] - r[0] for r in ok]
    connect = [r[1] - r[0] for r in rows if r[1]]
    answers = [row[2] for row in probe.rows if not row[3]]
    # From the gateway's accept, as it logged it (bench/turns.py, --turns).
    logged = gateway_log.figures(workdir, start, end, rows)
    peak = sampler.peak()
    answered = sum(1 for r in rows if r[4])
    return {
        "target": target.name, "scenario": burst.name, "clients": clients,
        "probed": "health_port" if probe_port else "port",
        "hold_s": hold, "wall_s": round(end - start, 2),
        "ok": len(ok), "errors": errors,
        "latency_p50_s": _round(statistics.median(latency) if latency else None),
        "latency_p99_s": _round(_pct(latency, 0.99)),
        "latency_max_s": _round(max(latency, default=None)),
        "connect_max_ms": _ms(max(connect, default=None)),
        "refused_p99_ms": _ms(_pct(refused, 0.99)),
        "refused_max_ms": _ms(max(refused, default=None)),
        "healthz_probes": len(probe.rows),
        "healthz_errors": len(probe.rows) - len(answers),
        "healthz_max_ms": _ms(max(answers, default=None)),
        "healthz_p99_ms": _ms(_pct(answers, 0.99)),
        "healthz_connect_max_ms": _ms(max((r[1] for r in probe.rows), default=None)),
        "idle_rss_mib": _mib(idle), "peak_rss_mib": _mib(peak),
        "after_rss_mib": _mib(after), "settled_rss_mib": _mib(settled),
        "settle_s": settle,
        "rss_per_inflight_kib": round((peak - idle) / len(ok)) if ok else None,
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_request": round(cpu / answered * 1000, 2) if answered else None,
        "listen_overflows": net1.get("ListenOverflows", 0) - net0.get("ListenOverflows", 0),
        "listen_drops": net1.get("ListenDrops", 0) - net0.get("ListenDrops", 0),
        "accept_queue_max": sampler.accept_queue_max,
        "runnable_wait_s": round(waited, 2),
        **logged,
        **_turns(workdir / "turns.jsonl", start, end),
        "series": {
            "rss": [(round(at - start, 2), kib) for at, kib in sampler.rows],
            "healthz": [(round(r[0] - start, 3), round(r[2], 4)) for r in probe.rows if not r[3]],
            "latency": sorted(round(x, 3) for x in latency),
            # (seconds into the burst at connect, ms to the 503's first byte)
            "refused": sorted(
                (round(r[1] - start, 3), round((r[2] - r[1]) * 1000, 1))
                for r in rows
                if r[4] == 503
            ),
        },
    }  # fmt: skip


def _turns(path: Path, start: float, end: float) -> dict[str, Any]:
    """The longest turns of the loop over the burst (``--turns``, bench/turns.py)."""
    if not path.exists():
        return {}
    rows = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
    rows = [r for r in rows if start <= r[0] <= end + 1]
    return {
        "turn_cpu_max_ms": _ms(max((r[2] for r in rows), default=None)),
        "turn_wall_max_ms": _ms(max((r[1] for r in rows), default=None)),
        "turns_over_50ms_cpu": sum(1 for r in rows if r[2] > 0.05),
        # (s into the burst at the turn's end, wall ms, CPU ms, and with --turns
        # from bench/turns.py: connections accepted, head reads, answers written)
        "turns": [
            (round(r[0] - start, 3), round(r[1] * 1e3, 1), round(r[2] * 1e3, 1), *r[3:])
            for r in rows
        ],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def run_all(
    workdir: Path, *, bursts: Sequence[Burst], targets: Sequence[str] = PEERS,
    hold: float, settle: float, trickle: float, clients: int | None = None,
    scale: float = 1.0, proxy_cpus: str | None = "1", client_cpus: str | None = "0",
    workers: int = 1, turns: bool = False, health_port: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    raise_nofile()  # the peers inherit it
    results = []
    for burst in bursts:
        count = clients or max(1, round(burst.clients * scale))
        data, content_type = body(burst)
        body_path = workdir / f"{burst.name}.body"
        body_path.write_bytes(data)
        config = overrides(burst, count)
        # imagegate's probes on a port of their own (server.health_port), if asked.
        health = procs.free_port() if health_port else None
        if health is not None:
            config["server"] = {"health_port": health}
        with stack(
            workdir, names=tuple(targets), latency_ms=hold * 1000,
            proxy_cpus=proxy_cpus, client_cpus=client_cpus, workers=workers,
            trickle_s=trickle, overrides=config, turns=turns,
        ) as running:  # fmt: skip
            for name in targets:
                row = run_one(
                    running.targets[name], replace(burst, clients=count), body_path,
                    content_type, clients=count, hold=hold, settle=settle,
                    workdir=workdir, client_cpus=client_cpus,
                    probe_port=health if name == "imagegate" else None,
                )  # fmt: skip
                _progress(row)
                results.append(row)
        body_path.unlink()
    return results


def _progress(r: dict[str, Any]) -> None:
    sys.stderr.write(
        f"{r['scenario']:11} {r['target']:9} ok {r['ok']}/{r['clients']} "
        f"errors {r['errors']} healthz max {r['healthz_max_ms']} ms "
        f"peak {r['peak_rss_mib']} MiB settled {r['settled_rss_mib']} MiB "
        f"cpu {r['cpu_ms_per_request']} ms/req overflows {r['listen_overflows']} "
        f"503 max {r['refused_max_ms']} p99 {r['refused_p99_ms']} ms "
        f"gateway, from accept: 503 max {r.get('refused_written_max_ms')} "
        f"p99 {r.get('refused_written_p99_ms')} ms (loop CPU "
        f"{r.get('refused_written_cpu_max_ms')}/{r.get('refused_written_cpu_p99_ms')}) "
        f"healthz max {r.get('healthz_written_max_ms')} ms (loop CPU "
        f"{r.get('healthz_written_cpu_max_ms')}) head read max "
        f"{r.get('head_written_max_ms')} ms; 503 from head read max "
        f"{r.get('seen_written_max_ms')} ms (loop CPU {r.get('seen_written_cpu_max_ms')})"
        f" client lag max "
        f"{r.get('client_read_lag_max_ms')} ms "
        f"turn cpu max {r.get('turn_cpu_max_ms')} ms wait {r['runnable_wait_s']} s\n"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.inflight", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="40 clients, 1 s hold, 1 s settle: under a minute")  # fmt: skip
    p.add_argument("--scenarios", help="comma-separated: " + ",".join(BY_NAME))
    p.add_argument("--targets", default=",".join(PEERS))
    p.add_argument("--clients", type=int, help="C for every scenario")
    p.add_argument("--scale", type=float, default=1.0, help="x each scenario's C")
    p.add_argument("--hold", type=float, help="upstream hold, s (default 10)")
    p.add_argument("--settle", type=float, help="RSS watched after load, s (60)")
    p.add_argument("--trickle", type=float, help="trickled reply's length, s (2)")
    p.add_argument("--proxy-cpus", default="1")
    p.add_argument("--client-cpus", default="0")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--turns", action=argparse.BooleanOptionalAction, default=True,
                   help="probe imagegate's loop turns and log its accepts "
                   "(bench/turns.py): the longest turn, times from accept")  # fmt: skip
    p.add_argument("--health-port", action="store_true",
                   help="probe /healthz on imagegate's server.health_port")  # fmt: skip
    p.add_argument("--name", help="results file stem (default: inflight[-quick])")
    p.add_argument("--out", type=Path, default=HERE / "results")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from bench import plot

    args = _parser().parse_args(argv)
    names = args.scenarios.split(",") if args.scenarios else list(BY_NAME)
    quick = args.quick
    hold = args.hold if args.hold is not None else (1.0 if quick else 10.0)
    settle = args.settle if args.settle is not None else (1.0 if quick else 60.0)
    trickle = args.trickle if args.trickle is not None else (0.5 if quick else 2.0)
    clients = args.clients or (40 if quick else None)
    with tempfile.TemporaryDirectory(prefix="imagegate-inflight-") as tmp:
        results = run_all(
            Path(tmp), bursts=[BY_NAME[n] for n in names],
            targets=args.targets.split(","), hold=hold, settle=settle,
            trickle=trickle, clients=clients, scale=args.scale,
            proxy_cpus=args.proxy_cpus, client_cpus=args.client_cpus,
            workers=args.workers, turns=args.turns, health_port=args.health_port,
        )  # fmt: skip
    name = args.name or ("inflight-quick" if quick else "inflight")
    meta = {
        "machine": report.machine(), "hold_s": hold, "settle_s": settle,
        "trickle_s": trickle, "workers": args.workers, "proxy_cpus": args.proxy_cpus,
        "client_cpus": args.client_cpus, "health_port": args.health_port,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
    }  # fmt: skip
    md = write(args.out, name, results, meta, plot.draw(args.out, name, results))
    sys.stdout.write(md.read_text())
    return 0


COLUMNS = (
    ("target", "peer"), ("clients", "C"), ("ok", "ok"), ("errors", "errors"),
    ("latency_p50_s", "p50 s"), ("latency_max_s", "max s"),
    ("refused_max_ms", "503 max ms"), ("refused_p99_ms", "503 p99 ms"),
    ("refused_written_max_ms", "503 max ms from accept"),
    ("refused_written_p99_ms", "503 p99 ms from accept"),
    ("refused_written_cpu_max_ms", "503 max loop-CPU ms from accept"),
    ("seen_written_max_ms", "503 max ms from head read"),
    ("seen_written_cpu_max_ms", "503 max loop-CPU ms from head read"),
    ("healthz_max_ms", "/healthz max ms"),
    ("healthz_written_max_ms", "/healthz max ms from accept"),
    ("healthz_written_cpu_max_ms", "/healthz max loop-CPU ms from accept"),
    ("head_written_max_ms", "head read max ms from accept"),
    ("client_read_lag_max_ms", "client read lag max ms"),
    ("connect_max_ms", "connect max ms"), ("listen_overflows", "overflows"),
    ("accept_queue_max", "accept queue max"),
    ("idle_rss_mib", "idle MiB"), ("peak_rss_mib", "peak MiB"),
    ("rss_per_inflight_kib", "KiB per edit"), ("after_rss_mib", "after MiB"),
    ("settled_rss_mib", "settled MiB"), ("cpu_ms_per_request", "CPU ms/req"),
    ("cpu_s", "CPU s"), ("runnable_wait_s", "run-queue wait s"),
    ("turn_cpu_max_ms", "longest turn CPU ms"),
)  # fmt: skip


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items())) or "0"
    return str(value)


def write(
    out: Path, name: str, results: list[dict[str, Any]], meta: dict[str, Any],
    pictures: dict[str, str],
) -> Path:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "results": results}
    # One line: the time series are most of it.
    (out / f"{name}.json").write_bytes(msgspec.json.encode(doc) + b"\n")
    lines = [f"# In-flight bursts ({name})", "",
             f"Upstream hold {meta['hold_s']} s; RSS settled {meta['settle_s']} s after "
             f"the load; {meta['machine'].get('cpu', '')}; load average after "
             f"{' '.join(meta['loadavg_after'])}."
             + (" imagegate's /healthz probed on its server.health_port."
                if meta.get("health_port") else ""), ""]  # fmt: skip
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        burst = BY_NAME.get(scenario)
        lines += [f"## {scenario}: {burst.title if burst else ''}", ""]
        lines.append("| " + " | ".join(h for _, h in COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for r in results:
            if r["scenario"] == scenario:
                lines.append(
                    "| " + " | ".join(_cell(r.get(k)) for k, _ in COLUMNS) + " |"
                )
        if scenario in pictures:
            lines += ["", f"![{scenario}]({pictures[scenario]})"]
        lines.append("")
    path = out / f"{name}.md"
    path.write_text("\n".join(lines))
    return path


if __name__ == "__main__":
    sys.exit(main())
