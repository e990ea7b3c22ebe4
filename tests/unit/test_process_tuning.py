"""Process set-up: the malloc arena cap and the garbage collector's tuning."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from proxy.__main__ import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_applied_on_glibc() -> None:
    assert limit_malloc_arenas({}) is True


def test_an_explicit_setting_wins() -> None:
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"}) is False


# Run in a fresh interpreter: freezing the test process's heap would outlive the test.
_GC_PROBE = """
import gc, weakref
from proxy.__main__ import GC_GEN0_THRESHOLD, tune_gc
tune_gc()
assert gc.get_freeze_count() > 0, "start-up objects are frozen"
assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
class Node:
    pass
freed = []
for i in range(3 * GC_GEN0_THRESHOLD):
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    weakref.finalize(a, freed.append, i)
    del a, b
# No explicit collect: the raised threshold still triggers passes on its own.
assert len(freed) > GC_GEN0_THRESHOLD, len(freed)
print("ok")
"""


def test_gc_freezes_start_up_and_still_collects_cycles() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _GC_PROBE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
