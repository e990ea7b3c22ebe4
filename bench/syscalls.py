"""Syscalls per request, imagegate against the aiohttp floor (issue 19 item 5).

``python -m bench.syscalls --scenarios json-c16,upload1-c16 [--seconds 4]``: for each
scenario and target, ``strace -c -f -p`` is attached to the server while wrk drives
it, and the counts are divided by the requests served. strace slows the traced
process several-fold, so the rates it runs at are not figures to quote; the calls a
request costs are (a slower server finds more bytes per wakeup, so if anything the
counts are low for both targets alike). The kernel's CPU share itself is in the main
report's "user / sys ms per req" column.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import procs
from bench.load import measure
from bench.scenarios import BY_NAME, write_body
from bench.targets import stack

# The calls reported one by one; the rest are summed as "other".
SHOWN = (
    ("recv", ("recvfrom", "recvmsg", "read", "readv")),
    ("send", ("sendto", "sendmsg", "write", "writev")),
    ("epoll_wait", ("epoll_wait", "epoll_pwait", "epoll_pwait2")),
    ("epoll_ctl", ("epoll_ctl",)),
)


def parse(text: str) -> dict[str, int]:
    """Call counts by name from strace -c's table."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        # "% time  seconds  usecs/call  calls  [errors]  syscall"
        if len(parts) < 5 or not parts[0].replace(".", "", 1).isdigit():
            continue
        if not parts[3].isdigit():
            continue
        counts[parts[-1]] = counts.get(parts[-1], 0) + int(parts[3])
    counts.pop("total", None)
    return counts


def grouped(counts: dict[str, int], requests: int) -> dict[str, float]:
    out: dict[str, float] = {}
    seen: set[str] = set()
    for label, names in SHOWN:
        out[label] = sum(counts.get(n, 0) for n in names) / requests
        seen.update(names)
    out["other"] = sum(v for k, v in counts.items() if k not in seen) / requests
    out["total"] = sum(counts.values()) / requests
    return out


def others(counts: dict[str, int], requests: int, top: int = 5) -> str:
    """The commonest calls outside SHOWN, per request: where "other" comes from."""
    seen = {n for _, names in SHOWN for n in names}
    rest = sorted(((v, k) for k, v in counts.items() if k not in seen), reverse=True)
    return ", ".join(f"{k} {v / requests:.1f}" for v, k in rest[:top])


def _traced(pid: int, out: Path) -> subprocess.Popen[bytes]:
    cmd = ["strace", "-c", "-f", "-qq", "-o", str(out), "-p", str(pid)]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached to every thread before the load starts
    return proc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.syscalls", description=__doc__)
    p.add_argument("--scenarios", default="small-c32,json-c16,upload1-c16")
    p.add_argument("--targets", default="aiohttp,imagegate")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--proxy-cpus", default="1")
    p.add_argument("--client-cpus", default="0")
    args = p.parse_args(argv)
    if shutil.which("strace") is None:
        sys.stderr.write("strace is not installed (Debian package: strace)\n")
        return 2
    names = tuple(args.targets.split(","))
    labels = [label for label, _ in SHOWN] + ["other", "total"]
    head = ["user ms", "sys ms", "minor faults", *labels, "other by name"]
    print("| scenario | target | " + " | ".join(head) + " |")
    print("|---|---|" + "---:|" * (len(head) - 1) + "---|")
    with tempfile.TemporaryDirectory(prefix="imagegate-syscalls-") as tmp:
        work = Path(tmp)
        with stack(
            work, names=names, latency_ms=2.0,
            proxy_cpus=args.proxy_cpus, client_cpus=args.client_cpus,
        ) as running:  # fmt: skip
            for name in args.scenarios.split(","):
                scenario = BY_NAME[name]
                body, ctype = write_body(scenario, work)
                for target_name in names:
                    target = running.targets[target_name]
                    assert target.proc is not None
                    kw = {"workdir": work, "client_cpus": args.client_cpus}
                    measure(target, scenario, body, ctype, seconds=1, **kw)
                    # Untraced first: CPU split and page faults per request.
                    faults = procs.minor_faults(target.pids())
                    m = measure(
                        target, scenario, body, ctype, seconds=args.seconds, **kw
                    )
                    faults = procs.minor_faults(target.pids()) - faults
                    plain = [f"{m.user_ms or 0:.3f}", f"{m.sys_ms or 0:.3f}",
                             f"{faults / max(m.requests, 1):.0f}"]  # fmt: skip
                    out = work / "strace.txt"
                    tracer = _traced(target.proc.pid, out)
                    m = measure(
                        target, scenario, body, ctype, seconds=args.seconds, **kw
                    )
                    tracer.send_signal(signal.SIGINT)
                    tracer.wait(30)
                    counts, requests = parse(out.read_text()), max(m.requests, 1)
                    per = grouped(counts, requests)
                    cells = [*plain, *(f"{per[label]:.1f}" for label in labels)]
                    rest = others(counts, requests, top=8)
                    print(f"| {name} | {target_name} | {' | '.join(cells)} | {rest} |")
                    sys.stdout.flush()
                body.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
