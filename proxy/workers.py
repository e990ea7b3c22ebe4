"""Several worker processes on one port, and one ``/metrics`` for all of them.

``supervise`` starts N copies of the proxy that each bind the port with SO_REUSEPORT (the
kernel spreads connections over them), forwards SIGTERM and SIGINT to them, and exits 0
when every worker has exited cleanly. It gives the workers a fresh
``PROMETHEUS_MULTIPROC_DIR``: prometheus-client then keeps each worker's values in files
there, and ``metrics.exposition`` aggregates them with ``MultiProcessCollector``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from types import FrameType

from prometheus_client import multiprocess

from proxy.environment import MULTIPROC_ENV


class Supervisor:
    def __init__(self, worker_argv: Sequence[str], workers: int) -> None:
        self._argv = [sys.executable, "-m", "proxy", *worker_argv]
        self._workers = workers
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False
        self._signalled: set[int] = set()

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        # Once each: a second SIGTERM during aiohttp's graceful shutdown would kill it.
        for pid, proc in self._procs.items():
            if pid not in self._signalled and proc.poll() is None:
                self._signalled.add(pid)
                proc.send_signal(signum)

    def run(self, environ: Mapping[str, str]) -> int:
        metrics_dir = tempfile.mkdtemp(prefix="imagegate-metrics-")
        env = {**environ, MULTIPROC_ENV: metrics_dir}
        old = {s: signal.signal(s, self._forward) for s in _FORWARDED}
        try:
            for _ in range(self._workers):
                if self._stopping:
                    break
                # Own process group: a terminal's Ctrl-C reaches workers only once,
                # through the supervisor.
                proc = subprocess.Popen(self._argv, env=env, process_group=0)
                self._procs[proc.pid] = proc
            return self._wait(metrics_dir)
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)
            self._forward(signal.SIGTERM, None)
            for proc in self._procs.values():
                proc.wait()
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _wait(self, metrics_dir: str) -> int:
        status = 0
        live = set(self._procs)
        while live:
            pid, code = os.wait()
            if pid not in live:
                continue
            live.discard(pid)
            self._procs[pid].returncode = os.waitstatus_to_exitcode(code)
            multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
            if not self._stopping or not _clean(self._procs[pid].returncode):
                # A worker that dies on its own takes the others down: the
                # orchestrator restarts the whole pod, not a part of it.
                status = 1
                sys.stderr.write(
                    f"imagegate: worker {pid} exited with "
                    f"{self._procs[pid].returncode}; stopping\n"
                )
                self._forward(signal.SIGTERM, None)
        return status


_FORWARDED = (signal.SIGTERM, signal.SIGINT)


def _clean(code: int | None) -> bool:
    # A worker still starting up has no handler yet and dies of the forwarded
    # signal itself: it stopped because it was asked to.
    return code == 0 or code in (-signal.SIGTERM, -signal.SIGINT)


def supervise(worker_argv: Sequence[str], workers: int) -> int:
    return Supervisor(worker_argv, workers).run(os.environ)
