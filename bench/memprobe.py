"""imagegate that reports where its memory is: ``python -m bench.memprobe OUT ARGS``.

Runs ``python -m proxy ARGS``; each SIGUSR1 appends one JSON line to OUT: RSS, the
resident kB of the main heap (``[heap]``) and of anonymous mappings (CPython's 1 MiB
object arenas, glibc's thread arenas, big blocks) from ``/proc/self/smaps``,
glibc's ``mallinfo2`` (``arena``: heap obtained with brk, ``uordblks`` in use,
``fordblks`` free, ``hblkhd`` in mmapped blocks) and CPython's object allocator
from ``sys._debugmallocstats`` (arenas, bytes in allocated blocks, bytes in
available ones). The dump runs on the event loop, so a probe taken under load
delays it (tens of ms). Used to find what a burst leaves resident (README, "Memory
after a burst"); never in production.

    PYTHONPATH=. python -m bench.memprobe /tmp/mem.jsonl --config imagegate.yaml &
    kill -USR1 $!   # idle; again at the peak and after the load
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import msgspec

import proxy.__main__ as gateway

_FIELDS = (
    *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
    *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
)


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]


def mallinfo2() -> dict[str, int]:
    """glibc's allocator counters in KiB; empty where glibc has no ``mallinfo2``."""
    try:
        call = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    call.restype = MallInfo2
    info = call()
    return {name: int(getattr(info, name)) // 1024 for name in _FIELDS}


def resident_kib(smaps: str) -> dict[str, int]:
    """Resident kB by kind of mapping: ``heap``, ``anon`` (no file), ``file``, other
    ``[names]``."""
    kinds: Counter[str] = Counter()
    kind = "other"
    for line in smaps.splitlines():
        head = line.split()
        if not head:
            continue
        if not head[0].endswith(":"):  # a mapping's first line: range perms ... [path]
            path = head[5] if len(head) > 5 else ""
            kind = "heap" if path == "[heap]" else path if path.startswith("[") else (
                "file" if path else "anon"
            )  # fmt: skip
        elif head[0] == "Rss:":
            kinds[kind] += int(head[1])
    return dict(kinds)


def obmalloc() -> dict[str, int]:
    """CPython's object allocator: arenas and bytes, from ``sys._debugmallocstats``
    (it writes to the C stderr, so fd 2 is pointed at a file meanwhile)."""
    stats: dict[str, int] = {}
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name = name.strip().lstrip("# ")
        if name in {"arenas allocated current", "bytes in allocated blocks",
                    "bytes in available blocks"}:  # fmt: skip
            stats[name] = int(value.strip().replace(",", ""))
    return stats


def dump(out: Path) -> None:
    start = time.perf_counter()
    statm = Path("/proc/self/statm").read_text().split()
    row = {
        "time": time.time(),
        "rss_kib": int(statm[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024),
        "resident_kib": resident_kib(Path("/proc/self/smaps").read_text()),
        "mallinfo2_kib": mallinfo2(),
        "obmalloc": obmalloc(),
        "tasks": len(asyncio.all_tasks()),
    }
    row["dump_ms"] = round((time.perf_counter() - start) * 1000, 1)
    with out.open("ab") as f:
        f.write(msgspec.json.encode(row) + b"\n")


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    make = gateway.new_event_loop

    def new_event_loop() -> asyncio.AbstractEventLoop:
        loop = make()
        loop.add_signal_handler(signal.SIGUSR1, dump, out)
        return loop

    gateway.new_event_loop = new_event_loop
    return gateway.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
