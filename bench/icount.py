"""Instructions per request under callgrind, with the bytes copied counted apart.

``python -m bench.icount SCENARIO [--requests N] [--concurrency C] [--target floor]``
runs imagegate (or the aiohttp floor) under ``valgrind --tool=callgrind`` with
collection off, warms it up, then counts N requests of the scenario sent C at a time.

Why apart: glibc copies buffers from 2 KiB up to its non-temporal threshold (a few
MiB) with ``rep movsb`` (its ``*_erms`` memcpy, memmove and memset), and callgrind
counts every byte that moves as one instruction. A
1 MiB data-URL edit's 9.7M "instructions" in the floor were 9.0M bytes copied and
0.8M instructions; imagegate's 11.4M were 7.9M bytes and 2.9M instructions (0.8M of
them base64 decoding). Totals alone said the two cost the same while wall-clock CPU
said 2x. ``Ir`` is the total, ``copied`` the counts inside glibc's mem* functions,
``other`` the rest: compare ``other`` across trees and targets.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from bench.procs import Proc, free_port
from bench.scenarios import BY_NAME, Scenario, body
from bench.targets import BENCH_KEY_ENV, imagegate_config

# glibc's string-move functions, whose rep-prefixed copies count a byte an instruction.
_MOVES = re.compile(r"__(?:memcpy|memmove|mempcpy|memset)\w*")
_LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$")


def split(annotated: str) -> tuple[int, int]:
    """(total Ir, Ir inside glibc's mem* moves) from ``callgrind_annotate`` output
    (``--inclusive=no``, Ir first)."""
    total = moved = 0
    for line in annotated.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        count, where = int(match.group(1).replace(",", "")), match.group(2)
        if "PROGRAM TOTALS" in where:
            total = count
        elif _MOVES.search(where):
            moved += count
    return total, moved


async def _send(url: str, data: bytes, ctype: str, count: int, conc: int) -> None:
    async with aiohttp.ClientSession() as session:
        left = iter(range(count))

        async def one_client() -> None:
            for _ in left:
                headers = {"Content-Type": ctype}
                async with session.post(url, data=data, headers=headers) as reply:
                    await reply.read()
                    if reply.status != 200:
                        raise RuntimeError(f"status {reply.status}")

        await asyncio.gather(*(one_client() for _ in range(conc)))


def count(
    scenario: Scenario, requests: int, conc: int, floor: bool, work: Path
) -> tuple[int, int]:
    """(total Ir, Ir in mem* moves) over ``requests`` requests."""
    up_port = free_port()
    upstream = Proc("upstream", [sys.executable, "-m", "bench.upstream", "--port",
                    str(up_port), "--latency-ms", "1"], log=work / "up.log", cpus=None)  # fmt: skip
    port = free_port()
    if floor:
        target = ["-m", "bench.floor", "--port", str(port), "--upstream", str(up_port)]
        url = f"http://127.0.0.1:{port}/{scenario.reply}/v1/images/edits"
    else:
        conf = imagegate_config(work, port, up_port)
        target = ["-m", "proxy", "--config", str(conf)]
        url = f"http://127.0.0.1:{port}/v3/images/edits"
    out = work / "callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
           f"--callgrind-out-file={out}", sys.executable, *target]  # fmt: skip
    env = {BENCH_KEY_ENV: "sk-bench-not-a-real-key"}
    proc = Proc("target", cmd, log=work / "target.log", cpus=None, env=env)
    try:
        upstream.wait_port(up_port)
        proc.wait_port(port, timeout=300)
        data, ctype = body(scenario)
        asyncio.run(_send(url, data, ctype, 30, conc))
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(proc.pid)], check=True, capture_output=True)  # fmt: skip
        asyncio.run(_send(url, data, ctype, 10, conc))  # warm under instrumentation
        subprocess.run([*control, "-z", str(proc.pid)], check=True, capture_output=True)  # fmt: skip
        asyncio.run(_send(url, data, ctype, requests, conc))
        subprocess.run([*control, "-d", str(proc.pid)], check=True, capture_output=True)  # fmt: skip
        time.sleep(1)
        dumps = sorted(work.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(dumps[-1])],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        return split(annotated)
    finally:
        proc.stop()
        upstream.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.icount", description=__doc__)
    p.add_argument("scenario", choices=sorted(BY_NAME))
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--target", choices=("imagegate", "floor"), default="imagegate")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="imagegate-icount-") as tmp:
        total, moved = count(
            BY_NAME[args.scenario], args.requests, args.concurrency,
            args.target == "floor", Path(tmp),
        )  # fmt: skip
    n = args.requests
    sys.stdout.write(
        f"{args.scenario} {args.target} c={args.concurrency} n={n}: "
        f"Ir/req {total / n / 1e6:.2f}M = copied {moved / n / 1e6:.2f}M "
        f"+ other {(total - moved) / n / 1e6:.2f}M\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
