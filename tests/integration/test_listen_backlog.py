"""The listen backlog (``server.backlog``) a real ``imagegate`` process asks of the
kernel, with one worker and with several, read back from the kernel with ``ss``.

Before issue 19 the gateway listened with aiohttp's default of 128: a burst of 1,000
clients overflowed the accept queue and 316 of them got ECONNRESET.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import msgspec
import pytest

from proxy.serve import effective_backlog, somaxconn
from tests.integration.test_cli import free_port
from tests.observability.procs import require_binary


async def _listen_queues(port: int) -> list[int]:
    """The backlog of each socket listening on ``port`` (``ss``'s Send-Q column)."""
    proc = await asyncio.create_subprocess_exec(
        "ss", "-ltnH", f"sport = :{port}", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return [int(line.split()[2]) for line in out.decode().splitlines() if line.strip()]


async def _listening(port: int, sockets: int) -> list[int]:
    for _ in range(200):
        queues = await _listen_queues(port)
        if len(queues) >= sockets:
            return queues
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listened on {port}")


def _config(tmp_path: Path, port: int, server: dict[str, object]) -> Path:
    doc = {
        "server": {"host": "127.0.0.1", "port": port, **server},
        "limits": {"temp_dir": str(tmp_path)},
        "providers": {"openai": {}},
    }
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.json.encode(doc))
    return path


@pytest.mark.parametrize(
    ("server", "sockets"),
    [({}, 1), ({"backlog": 1000}, 1), ({"workers": 2, "backlog": 900}, 2)],
)
async def test_every_listening_socket_gets_the_configured_backlog(
    tmp_path: Path, clean_env: dict[str, str], server: dict[str, object], sockets: int
) -> None:
    require_binary("ss")
    port = free_port()
    config = _config(tmp_path, port, server)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env=clean_env,
    )  # fmt: skip
    try:
        queues = await _listening(port, sockets)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    wanted = server.get("backlog", 4096)
    assert isinstance(wanted, int)
    cap = await asyncio.to_thread(somaxconn)
    expected = wanted if cap is None else min(wanted, cap)
    # Before: [128] whatever the load (aiohttp's default).
    assert queues == [expected] * sockets


def test_a_lower_somaxconn_caps_the_backlog_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cap = tmp_path / "somaxconn"
    cap.write_text("1024\n")
    with caplog.at_level(logging.WARNING, logger="imagegate"):
        assert effective_backlog(4096, cap) == 1024
    (record,) = caplog.records
    assert "net.core.somaxconn" in record.getMessage()
    assert record.fields == {"backlog": 4096, "somaxconn": 1024}  # type: ignore[attr-defined]
    caplog.clear()
    assert effective_backlog(512, cap) == 512
    assert effective_backlog(4096, tmp_path / "missing") == 4096
    assert caplog.records == []
