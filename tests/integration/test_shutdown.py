"""Graceful shutdown on SIGTERM against a real ``imagegate`` process and in-process.

In-flight requests finish, nothing is accepted after the signal, no temp file is left,
and the process exits 0; past the grace period what is left is cancelled cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from prometheus_client import CollectorRegistry

from proxy.app import create_app
from proxy.serve import serve
from proxy.state import LIFECYCLE
from tests.conftest import UPSTREAM_KEY, build_config, leftover_files
from tests.fakes.openai import FakeOpenAI
from tests.gateway import Gate, eventually, free_port
from tests.images import png


async def _upload(base: str) -> int:
    form = aiohttp.FormData()
    form.add_field("model", "openai/gpt-image-2.5-sunburst")
    form.add_field("prompt", "a hat")
    form.add_field("image", png(32, 32), filename="a.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{base}/v3/images/edits", data=form) as r,
    ):
        await r.read()
        return r.status


async def _refused(base: str) -> bool:
    """True once the listener is gone (the connection is refused)."""
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{base}/readyz") as r:
            await r.read()
            return False
    except aiohttp.ClientConnectorError:
        return True


async def _accepting(base: str) -> bool:
    return not await _refused(base)


async def _true(value: bool) -> bool:
    return value


async def _read_until(proc: asyncio.subprocess.Process, marker: bytes) -> None:
    assert proc.stderr is not None
    while True:
        line = await proc.stderr.readline()
        assert line, f"imagegate exited without logging {marker!r}"
        if marker in line:
            return


async def _wait_ready(base: str, proc: asyncio.subprocess.Process) -> None:
    async def ready() -> bool:
        assert proc.returncode is None, "imagegate exited during start"
        return await _accepting(base)

    await eventually(ready)


async def _start_process(
    tmp_path: Path, temp_root: Path, upstream: str, grace_s: float
) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    config = {
        "server": {"shutdown_timeout_s": grace_s, "access_log": False},
        # spool_bytes 0: every upload goes to disk, so the files can be counted.
        "limits": {"temp_dir": str(temp_root), "spool_bytes": 0},
        "providers": {"openai": {"base_url": upstream}},
    }
    path = tmp_path / "imagegate.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--config", str(path), "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    await _wait_ready(base, proc)
    return proc, base


async def test_sigterm_drains_in_flight_requests(
    held: tuple[FakeOpenAI, Gate], tmp_path: Path, temp_root: Path
) -> None:
    fake, gate = held
    proc, base = await _start_process(tmp_path, temp_root, fake.url, 20.0)  # type: ignore[attr-defined]

    async def terminate_then_release() -> bool:
        await gate.wait_for(3)
        assert len(leftover_files(temp_root)) == 3  # one spooled upload each
        proc.send_signal(signal.SIGTERM)
        # A connection made before the signal lands would wait out the grace period.
        await _read_until(proc, b'"msg":"draining"')
        refused = await _refused(base)
        gate.open()
        return refused

    *statuses, refused_after = await asyncio.gather(
        _upload(base), _upload(base), _upload(base), terminate_then_release()
    )
    assert statuses == [200, 200, 200]
    assert refused_after
    assert await proc.wait() == 0
    assert len(fake.received) == 3
    assert leftover_files(temp_root) == []
    await _read_until(proc, b'"msg":"stopped"')


async def test_grace_period_cancels_what_is_left(
    held: tuple[FakeOpenAI, Gate], tmp_path: Path, temp_root: Path
) -> None:
    fake, gate = held
    proc, base = await _start_process(tmp_path, temp_root, fake.url, 0.3)  # type: ignore[attr-defined]

    async def terminate() -> None:
        await gate.wait_for(1)
        proc.send_signal(signal.SIGTERM)

    results = await asyncio.gather(_upload(base), terminate(), return_exceptions=True)
    assert isinstance(results[0], aiohttp.ClientError)  # cut off, never answered
    assert await proc.wait() == 0
    assert leftover_files(temp_root) == []


async def test_serve_in_process_stops_on_sigterm(
    held: tuple[FakeOpenAI, Gate], temp_root: Path
) -> None:
    fake, gate = held
    config = build_config(temp_root, {"openai": {"base_url": fake.url}})  # type: ignore[attr-defined]
    app = create_app(
        config, environ={"OPENAI_API_KEY": UPSTREAM_KEY}, registry=CollectorRegistry()
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    seen: dict[str, Any] = {}

    async def drive() -> None:
        await eventually(lambda: _accepting(base))
        gate.released.clear()

        async def signal_when_held() -> None:
            await gate.wait_for(1)
            os.kill(os.getpid(), signal.SIGTERM)
            # Probe only once serve() has the signal: the listener closes right after.
            await eventually(lambda: _true(app[LIFECYCLE].draining))
            seen["refused"] = await _refused(base)
            gate.open()

        seen["status"], _ = await asyncio.gather(_upload(base), signal_when_held())

    await asyncio.gather(
        serve(app, host="127.0.0.1", port=port, shutdown_timeout_s=10), drive()
    )
    assert seen == {"status": 200, "refused": True}
    assert leftover_files(temp_root) == []


async def test_taken_port_is_one_line_and_exit_1(
    tmp_path: Path, temp_root: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "c.yaml"
        path.write_bytes(
            msgspec.yaml.encode(
                {"providers": {"openai": {}}, "limits": {"temp_dir": str(temp_root)}}
            )
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "--config", str(path), "--port", str(port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
    assert proc.returncode == 1
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith(f"imagegate: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in last.lower()
