"""The real command: ``check-config``, and ``--workers N`` with one aggregated /metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import msgspec

from tests.conftest import UPSTREAM_KEY
from tests.fakes.openai import FakeOpenAI
from tests.observability.procs import (
    free_port,
    require_binary,
    run,
    start_imagegate,
    wait_http,
)
from tests.observability.scrape import scrape, value


async def test_check_config_accepts_the_example(repo_root: Path) -> None:
    code, out, err = await run(
        sys.executable, "-m", "proxy", "check-config", "config/imagegate.yaml"
    )
    assert (code, err) == (0, "")
    assert out == "config/imagegate.yaml: ok (1 provider)\n"


async def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    await asyncio.to_thread(path.write_text, "server:\n  workers: 0\n")
    code, out, err = await run(sys.executable, "-m", "proxy", "check-config", str(path))
    assert code == 2
    assert out == ""
    assert err.startswith("imagegate: invalid config: ")
    assert "server.workers" in err


async def test_workers_below_one_refused() -> None:
    code, _, err = await run(sys.executable, "-m", "proxy", "--workers", "0")
    assert code == 2
    assert err == "imagegate: --workers (server.workers): expected `int` >= 1\n"


async def test_workers_need_a_fixed_port() -> None:
    code, _, err = await run(
        sys.executable, "-m", "proxy", "--workers", "2", "--port", "0"
    )
    assert code == 2
    assert "needs a fixed --port" in err


def _children(pid: int) -> list[int]:
    # Linux: the supervisor's direct children.
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


async def _promtool_accepts(url: str) -> None:
    promtool = require_binary("promtool")
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        text = await r.read()
    assert b"imagegate_cost_usd_total" in text
    assert await run(promtool, "check", "metrics", stdin=text) == (0, "", "")


def _multiproc_dir(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (entry,) = [e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return entry.split(b"=", 1)[1].decode()


async def _config(tmp_path: Path, port: int, upstream: str) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port, "workers": 1},
        "limits": {"temp_dir": str(tmp_path)},
        "providers": {"openai": {"base_url": upstream}},
    }
    path = tmp_path / "proxy.yaml"
    await asyncio.to_thread(path.write_bytes, msgspec.yaml.encode(config))
    return path


def _env() -> dict[str, str]:
    env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


async def test_workers_share_port_and_metrics(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    port = free_port()
    path = await _config(tmp_path, port, fake_openai.url)  # type: ignore[attr-defined]
    proc = await start_imagegate(["--config", str(path), "--workers", "2"], _env())
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_http(f"{base}/readyz", proc)
        workers = await asyncio.to_thread(_children, proc.pid)
        assert len(workers) == 2
        metrics_dir = await asyncio.to_thread(_multiproc_dir, workers[0])
        body = {"model": "openai/gpt-image-2.5-sunburst", "prompt": "x"}
        # New connections each time: the kernel spreads them over the workers.
        for _ in range(12):
            async with (
                aiohttp.ClientSession() as s,
                s.post(f"{base}/v3/images/generations", json=body) as r,
            ):
                assert r.status == 200
        m = await scrape(f"{base}/metrics")
        await _promtool_accepts(f"{base}/metrics")
        gen = {"route": "/v3/images/generations"}
        assert value(m, "imagegate_requests_total", **gen, code_class="2xx") == 12
        assert value(m, "imagegate_overhead_seconds_count", **gen) == 12
        assert value(m, "imagegate_cost_usd_total", provider="openai") > 0
        assert value(m, "imagegate_inflight_requests") == 0
        assert len(fake_openai.received) == 12
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await proc.wait()
    err = await proc.stderr.read() if proc.stderr else b""
    assert code == 0, err.decode()[-3000:]
    assert not await asyncio.to_thread(os.path.exists, metrics_dir)


async def test_a_dying_worker_stops_the_rest(tmp_path: Path) -> None:
    port = free_port()
    path = await _config(tmp_path, port, "http://127.0.0.1:9")
    proc = await start_imagegate(["--config", str(path), "--workers", "2"], _env())
    await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    workers = await asyncio.to_thread(_children, proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    code = await proc.wait()
    err = await proc.stderr.read() if proc.stderr else b""
    assert code == 1
    assert f"worker {workers[0]} exited with -9; stopping" in err.decode()
    assert not await asyncio.to_thread(os.path.exists, f"/proc/{workers[1]}")
