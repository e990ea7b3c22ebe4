"""bench/syscalls.py reads strace's summary table: checked on a real trace of a child
that makes a known number of calls (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.syscalls import grouped, others, parse
from tests.observability.procs import require_binary

_CHILD = (
    "import os\n"
    "for _ in range(3000): os.getpid()\n"
    "fd = os.open(os.devnull, os.O_WRONLY)\n"
    "for _ in range(200): os.write(fd, b'x')\n"
)


def test_counts_from_a_real_trace(tmp_path: Path) -> None:
    strace = require_binary("strace")
    out = tmp_path / "trace.txt"
    subprocess.run(
        [
            strace,
            "-c",
            "-f",
            "-qq",
            "-o",
            str(out),
            sys.executable,
            "-I",
            "-S",
            "-c",
            _CHILD,
        ],
        check=True,
    )
    counts = parse(out.read_text())
    assert counts["getpid"] >= 3000
    assert counts["write"] >= 200
    assert "total" not in counts
    per = grouped(counts, requests=100)
    # write is a send; the getpid calls land in "other", and the total is the sum.
    assert per["send"] >= 2.0
    assert per["other"] >= 30.0
    assert per["total"] == pytest.approx(sum(counts.values()) / 100)
    assert others(counts, requests=100).startswith("getpid ")
