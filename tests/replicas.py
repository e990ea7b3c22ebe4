"""Real imagegate processes for the multi-replica tests: started with ``python -m
proxy``, ready when ``/readyz`` answers 200, stopped with SIGTERM (a test may kill one
first)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from tests.gateway import eventually, free_port


@dataclass
class Replica:
    base: str
    process: asyncio.subprocess.Process


async def ready(replica: Replica) -> bool:
    assert replica.process.returncode is None, "imagegate exited during start"
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{replica.base}/readyz") as r:
            return r.status == 200
    except aiohttp.ClientConnectorError:
        return False


@contextlib.asynccontextmanager
async def running(
    args: Sequence[str], env: Mapping[str, str], count: int = 2
) -> AsyncIterator[list[Replica]]:
    """``count`` processes of ``python -m proxy *args --port P``, each on its own port."""
    started: list[Replica] = []
    try:
        for _ in range(count):
            port = free_port()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy", *args, "--port", str(port),
                env=dict(env),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            started.append(Replica(f"http://127.0.0.1:{port}", proc))
        for replica in started:
            await eventually(lambda r=replica: ready(r), within_s=30)  # type: ignore[misc]
        yield started
    finally:
        for replica in started:
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGTERM)
                await replica.process.wait()
