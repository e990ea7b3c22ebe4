"""Process set-up: the malloc arena cap and the garbage collector's tuning."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from proxy.__main__ import keep_freed_memory, limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_applied_on_glibc() -> None:
    assert limit_malloc_arenas({}) is True


def test_an_explicit_setting_wins() -> None:
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"}) is False


def test_explicit_thresholds_win() -> None:
    assert keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "131072"}) is False


# Buffers of 1.4 MB alive at once and freed together, as JSON edits with a 1 MiB data
# URL hold them: with glibc's sliding thresholds the heap's top went back to the
# kernel each time and every page was faulted in again. Four of them (5.6 MB) stay
# under the fixed trim threshold (8 MiB); more are returned, which is what lets RSS
# fall after a burst.
_FAULTS_PROBE = """
import resource, sys
from proxy.__main__ import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory({})
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
size = 1_400_000
held = [b"x" * size for _ in range(4)]
del held
before = faults()
for _ in range(20):
    held = [b"x" * size for _ in range(4)]
    del held
print((faults() - before) / (20 * 4) / (size // 4096))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_buffers_are_reused_without_page_faults() -> None:
    def faulted(mode: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", _FAULTS_PROBE, mode],
            capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return float(done.stdout)

    # The share of each buffer's pages faulted in anew per round.
    assert faulted("sliding") > 0.5  # what the gateway paid before
    assert faulted("kept") < 0.05


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
