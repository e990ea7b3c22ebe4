"""Processes of the benchmark: start pinned, wait for the port, read /proc, stop.

CPU time comes from ``/proc/<pid>/stat`` (utime + stime, all threads) summed over a
process and its children; peak RSS is sampled from ``/proc/<pid>/status`` (VmRSS) and
cross-checked against the kernel's high-water mark (VmHWM, reset by ``clear_refs``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", cpus, *cmd]


class Proc:
    """A child process with its output in a log file; stopped with SIGTERM, then KILL."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        log: Path,
        cpus: str | None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self._out: IO[bytes] = log.open("wb")
        self.popen = subprocess.Popen(
            pinned(cmd, cpus),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {port}: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        self._out.flush()
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._out.close()


def tree(pid: int) -> list[int]:
    """The process and its descendants (nginx's master and worker)."""
    out = [pid]
    for task in _tasks(pid):
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            for child in children:
                out += tree(int(child))
    return out


def _tasks(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def cpu_split(pids: Sequence[int]) -> tuple[float, float]:
    """User and system (kernel) CPU seconds: the kernel's share (socket and file I/O,
    page faults, thread wake-ups) is what instruction counts of user space miss."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
    return user / _TICK, system / _TICK


def minor_faults(pids: Sequence[int]) -> int:
    """Minor page faults so far: each first touch of a fresh page (a large buffer
    mmap'd by malloc and freed again is faulted in anew every time)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            total += int(stat[stat.rindex(")") + 2 :].split()[7])  # minflt
    return total


def cpu_seconds(pids: Sequence[int]) -> float:
    return sum(cpu_split(pids))


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def rss_kib(pids: Sequence[int]) -> int:
    return sum(_status_kib(pid, "VmRSS:") for pid in pids)


def hwm_kib(pids: Sequence[int]) -> int:
    return sum(_status_kib(pid, "VmHWM:") for pid in pids)


def reset_hwm(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


@contextlib.contextmanager
def rss_sampler(pids: Sequence[int], interval: float = 0.01) -> Iterator[list[int]]:
    """Sample the summed VmRSS every ``interval``; the list gets the peak in KiB."""
    peak = [rss_kib(pids)]
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], rss_kib(pids))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], rss_kib(pids))
