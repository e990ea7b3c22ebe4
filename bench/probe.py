"""What the in-flight benchmark watches while a burst runs, from threads of the harness.

``Probe`` asks ``GET /healthz`` again and again on a fresh connection, one at a time,
and times each answer from the moment ``connect()`` returned (the kernel completed the
handshake and queued the connection for ``accept()``) to the answer's last byte, so a
proxy whose event loop stalls, or that is slow to accept, shows here; the connect time
itself is kept apart (a SYN dropped by a full accept queue costs a one-second retry).
``Sampler`` reads the summed RSS of the target's processes every ``interval``.
``netstat`` reads the kernel's listen-queue counters.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench import procs

PROBE_GAP_S = 0.05
PROBE_TIMEOUT_S = 10.0


def netstat(path: Path = Path("/proc/net/netstat")) -> dict[str, int]:
    """TcpExt counters (ListenOverflows, ListenDrops, ...) of this network namespace."""
    lines = path.read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            keys, nums = names.split()[1:], values.split()[1:]
            return {k: int(v) for k, v in zip(keys, nums, strict=True)}
    return {}


def healthz(
    port: int, timeout: float = PROBE_TIMEOUT_S
) -> tuple[float, float, str, int]:
    """One probe: (connect seconds, connected-to-answer seconds, error or "", the
    probe's local port: its name in the gateway's accept log)."""
    start = time.monotonic()
    connected = start
    local = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            connected = time.monotonic()
            local = sock.getsockname()[1]
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while b"\r\n\r\n" not in data or not _complete(data):
                more = sock.recv(65536)
                if not more:
                    break
                data += more
        if not data.startswith(b"HTTP/1.1 200"):
            return connected - start, time.monotonic() - connected, "status", local
    except OSError as exc:
        failed = type(exc).__name__
        return connected - start, time.monotonic() - connected, failed, local
    return connected - start, time.monotonic() - connected, "", local


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


class Probe:
    """Probes ``/healthz`` back to back (``PROBE_GAP_S`` apart) until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        # (monotonic time of the probe's start, connect s, answer s, error, port)
        self.rows: list[tuple[float, float, float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # Real-time priority where allowed (root, CAP_SYS_NICE): on a busy machine the
        # probe's own wake-ups would otherwise add tens of ms to what it measures. It
        # never spins: it blocks on its socket or waits PROBE_GAP_S.
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        while not self._stop.is_set():
            at = time.monotonic()
            self.rows.append((at, *healthz(self.port)))
            self._stop.wait(PROBE_GAP_S)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def accept_queue(port: int, path: Path = Path("/proc/net/tcp")) -> int:
    """Connections waiting for ``accept()`` on 127.0.0.1:``port`` (its listening
    socket's rx_queue in /proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    with path.open() as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A":  # TCP_LISTEN
                return int(fields[4].split(":")[1], 16)
    return 0


def wait_seconds(pids: Sequence[int]) -> float:
    """Seconds the processes' threads spent runnable but not running (schedstat):
    what other work on the machine added to their latency."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = Path(f"/proc/{pid}/task/{task}/schedstat").read_text()
                    total += int(stat.split()[1])
    return total / 1e9


class Sampler:
    """Summed VmRSS (KiB) of ``pids`` every ``interval`` as (monotonic time, KiB),
    and the longest accept queue seen on ``port``."""

    def __init__(
        self, pids: Sequence[int], interval: float = 0.1, port: int | None = None
    ) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.port = port
        self.rows: list[tuple[float, int]] = []
        self.accept_queue_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.rows.append((time.monotonic(), procs.rss_kib(self.pids)))
            if self.port is not None:
                with contextlib.suppress(OSError):
                    queued = accept_queue(self.port)
                    self.accept_queue_max = max(self.accept_queue_max, queued)
            if self._stop.wait(self.interval):
                return

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join()

    def peak(self, since: float = 0.0) -> int:
        return max((kib for at, kib in self.rows if at >= since), default=0)
