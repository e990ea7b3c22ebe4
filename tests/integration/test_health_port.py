"""``server.health_port``: a real ``imagegate`` process answering its probes on a
second port (one worker and two), the API only on the main port.

Probes on the main port wait in its accept queue behind a burst's connections (issue
19: 2,000 clients queued up to a second and a half there); on their own listening
socket they do not. The main port keeps answering the probes too.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import msgspec
import pytest

from tests.integration.test_cli import free_port

PROBES = ("/healthz", "/readyz", "/metrics")


def _config(tmp_path: Path, port: int, health: int, workers: int) -> Path:
    doc = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "health_port": health,
            "workers": workers,
        },
        "limits": {"temp_dir": str(tmp_path)},
        "providers": {"openai": {}},
    }
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.json.encode(doc))
    return path


async def _up(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        try:
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


async def _status(session: aiohttp.ClientSession, method: str, url: str) -> int:
    async with session.request(method, url, data=b"x" * 1000) as resp:
        await resp.read()
        return resp.status


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_health_port_answers_the_probes_and_nothing_else(
    tmp_path: Path, clean_env: dict[str, str], workers: int
) -> None:
    port, health = free_port(), free_port()
    config = _config(tmp_path, port, health, workers)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env=clean_env,
    )  # fmt: skip
    main, probes = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{health}"
    try:
        # One keep-alive connection per port: every request on it is checked, not
        # only its first.
        limit = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=limit) as session:
            await _up(session, f"{probes}/healthz")
            await _up(session, f"{main}/healthz")
            on_health = {
                path: await _status(session, "GET", probes + path) for path in PROBES
            }
            api = [
                await _status(session, "GET", f"{probes}/v3/images/models"),
                await _status(session, "POST", f"{probes}/v3/images/edits"),
                await _status(session, "GET", f"{probes}/healthz"),
                await _status(session, "GET", f"{probes}/v3/images/models"),
            ]
            on_main = [
                await _status(session, "GET", f"{main}/healthz"),
                await _status(session, "GET", f"{main}/v3/images/models"),
            ]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert on_health == {"/healthz": 200, "/readyz": 200, "/metrics": 200}
    assert api == [404, 404, 200, 404]
    assert on_main == [200, 200]
