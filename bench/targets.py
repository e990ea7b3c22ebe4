"""The processes under test: the fake upstream, nginx, the aiohttp floor and
imagegate, each pinned.

All proxies get the same core (``proxy_cpus``); the fake upstream and the load
generator share the other (``client_cpus``), so neither proxy competes with them.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from bench.procs import Proc, free_port, tree
from bench.scenarios import Scenario

HERE = Path(__file__).resolve().parent
BENCH_KEY_ENV = "IMAGEGATE_BENCH_OPENAI_KEY"


@dataclass
class Target:
    name: str  # "direct", "nginx", "aiohttp", "imagegate"
    port: int
    proc: Proc | None = None  # None for "direct": nothing sits in between

    def url(self, scenario: Scenario) -> str:
        if self.name == "imagegate":
            return f"http://127.0.0.1:{self.port}/v3/images/edits"
        return f"http://127.0.0.1:{self.port}/{scenario.reply}/v1/images/edits"

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc is not None else []


@dataclass
class Stack:
    upstream: Proc
    targets: dict[str, Target] = field(default_factory=dict)


def nginx_config(directory: Path, listen: int, upstream: int) -> Path:
    text = (HERE / "nginx.conf.template").read_text()
    text = text.replace("@DIR@", str(directory)).replace("@LISTEN@", str(listen))
    path = directory / "nginx.conf"
    path.write_text(text.replace("@UPSTREAM@", str(upstream)))
    return path


def imagegate_config(
    directory: Path,
    listen: int,
    upstream: int,
    overrides: dict[str, dict[str, object]] | None = None,
) -> Path:
    """The default config plus providers on the fake upstream (YAML is JSON);
    ``overrides`` adds keys to its top-level sections (``backpressure``, ``server``)."""
    base = f"http://127.0.0.1:{upstream}"
    doc: dict[str, dict[str, object]] = {
        "server": {"host": "127.0.0.1", "port": listen},
        "limits": {"temp_dir": str(directory)},
        "providers": {
            "openai": {"base_url": f"{base}/small/v1", "api_key_env": BENCH_KEY_ENV},
            "big": {
                "type": "openai",
                "base_url": f"{base}/big/v1",
                "api_key_env": BENCH_KEY_ENV,
            },
            "stream": {
                "type": "openai",
                "base_url": f"{base}/stream/v1",
                "api_key_env": BENCH_KEY_ENV,
            },
            "trickle": {
                "type": "openai",
                "base_url": f"{base}/trickle/v1",
                "api_key_env": BENCH_KEY_ENV,
            },
        },
    }
    for section, keys in (overrides or {}).items():
        doc[section] = {**doc.get(section, {}), **keys}
    path = directory / "imagegate.yaml"
    path.write_bytes(msgspec.json.encode(doc))
    return path


def _launch(
    name: str,
    cmd: list[str],
    port: int,
    directory: Path,
    cpus: str | None,
    env: dict[str, str] | None = None,
) -> Proc:
    """Start ``cmd`` (logging to ``<name>.log``) and wait until it listens on ``port``."""
    proc = Proc(name, cmd, log=directory / f"{name}.log", cpus=cpus, env=env)
    proc.wait_port(port)
    return proc


def _upstream(
    directory: Path, latency_ms: float, cpus: str | None, trickle_s: float
) -> tuple[Proc, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.upstream", "--port", str(port),
           "--latency-ms", str(latency_ms), "--trickle-s", str(trickle_s)]  # fmt: skip
    return _launch("upstream", cmd, port, directory, cpus), port


def _nginx(directory: Path, upstream: int, cpus: str | None) -> Target:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = nginx_config(directory, port, upstream)
    cmd = [binary, "-p", str(directory), "-c", str(conf), "-e", "stderr"]
    return Target("nginx", port, _launch("nginx", cmd, port, directory, cpus))


def floor(directory: Path, upstream: int, cpus: str | None) -> Target:
    """The aiohttp floor (``bench/floor.py``) in front of ``upstream``, listening."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.floor", "--port", str(port),
           "--upstream", str(upstream)]  # fmt: skip
    return Target("aiohttp", port, _launch("aiohttp", cmd, port, directory, cpus))


def _imagegate(
    directory: Path,
    upstream: int,
    cpus: str | None,
    workers: int,
    overrides: dict[str, dict[str, object]] | None,
    turns: bool = False,
) -> Target:
    port = free_port()
    conf = imagegate_config(directory, port, upstream, overrides)
    cmd = [sys.executable, "-m", "proxy", "--config", str(conf)]
    if turns:
        # The loop's turns probed (bench/turns.py), into <directory>/turns.jsonl.
        cmd[2:3] = ["bench.turns", str(directory / "turns.jsonl")]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    env = {BENCH_KEY_ENV: "sk-bench-not-a-real-key"}
    proc = _launch("imagegate", cmd, port, directory, cpus, env)
    return Target("imagegate", port, proc)


@contextlib.contextmanager
def stack(
    directory: Path,
    *,
    names: tuple[str, ...],
    latency_ms: float,
    proxy_cpus: str | None,
    client_cpus: str | None,
    workers: int = 1,
    trickle_s: float = 2.0,
    overrides: dict[str, dict[str, object]] | None = None,
    turns: bool = False,
) -> Iterator[Stack]:
    """Start the fake upstream and the named targets; stop them all on exit."""
    upstream, up_port = _upstream(directory, latency_ms, client_cpus, trickle_s)
    running = Stack(upstream)
    try:
        for name in names:
            if name == "direct":
                running.targets[name] = Target("direct", up_port)
            elif name == "nginx":
                running.targets[name] = _nginx(directory, up_port, proxy_cpus)
            elif name == "aiohttp":
                running.targets[name] = floor(directory, up_port, proxy_cpus)
            elif name == "imagegate":
                running.targets[name] = _imagegate(
                    directory, up_port, proxy_cpus, workers, overrides, turns
                )
            else:
                raise ValueError(f"unknown target {name!r}")
        yield running
    finally:
        for target in reversed(running.targets.values()):
            if target.proc is not None:
                target.proc.stop()
        upstream.stop()
