"""bench/memprobe.py reads what it reports: mappings by kind, glibc's counters and
CPython's object arenas."""

from __future__ import annotations

import platform
import sys

import pytest

from bench.memprobe import mallinfo2, obmalloc, resident_kib

SMAPS = """\
55d0c0a00000-55d0c0b00000 rw-p 00000000 00:00 0                          [heap]
Size:               1024 kB
Rss:                 900 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Rss:                1024 kB
7f0000100000-7f0000200000 r-xp 00000000 08:01 123                        /usr/lib/libc.so.6
Rss:                 512 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                  64 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  12 kB
"""


def test_resident_kib_by_kind_of_mapping() -> None:
    assert resident_kib(SMAPS) == {
        "heap": 900,
        "anon": 1024 + 64,
        "file": 512,
        "[stack]": 12,
    }


@pytest.mark.skipif(
    sys.implementation.name != "cpython", reason="CPython's object allocator"
)
def test_obmalloc_counts_arenas_and_live_blocks() -> None:
    before = obmalloc()
    kept = [object() for _ in range(500_000)]  # 8 MB of 16-byte blocks
    after = obmalloc()
    assert after["arenas allocated current"] > before["arenas allocated current"]
    live = "bytes in allocated blocks"
    assert after[live] - before[live] >= 16 * len(kept)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallinfo2")
def test_mallinfo2_sees_the_heap_in_use() -> None:
    info = mallinfo2()
    assert info["uordblks"] > 0
    assert info["arena"] >= info["uordblks"]
