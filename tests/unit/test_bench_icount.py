"""bench/icount.py splits callgrind's count into bytes moved by glibc's mem* functions
and the rest: checked on a real callgrind run of a child that copies a known amount
(no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.icount import split
from tests.observability.procs import require_binary

# 400 copies of 500 kB: glibc's rep-movsb memcpy, which callgrind counts byte by
# byte (copies over its non-temporal threshold, a few MB, take vector stores instead).
_CHILD = "src = bytearray(500_000)\nfor _ in range(400): bytes(src)\n"


def test_copies_are_counted_apart(tmp_path: Path) -> None:
    valgrind = require_binary("valgrind")
    out = tmp_path / "callgrind.out"
    subprocess.run(
        [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", "-q",
         sys.executable, "-I", "-S", "-c", _CHILD],
        check=True, timeout=300,
    )  # fmt: skip
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(out)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    total, moved = split(annotated)
    assert total > moved > 0
    # The 200 MB copied, each byte an "instruction": more than all the interpreter's
    # own start-up.
    assert moved >= 400 * 500_000
    assert total - moved < moved
