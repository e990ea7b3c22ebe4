"""A 100 MiB upload to ``/v3/upload``: the object store (moto's S3 server, and
SeaweedFS, a production store) against the local-disk store: peak RSS growth of the
imagegate process and throughput.

    python -m bench.upload_object_store [--mib 100] [--repeat 3]

The client streams the body from a generator (nothing held), so the process's peak RSS
(VmHWM) above its RSS before the upload is what the upload costs the gateway. moto
keeps objects in its own memory, another process; its speed bounds the S3 figure.
SeaweedFS (tests/seaweedfs.py) writes them to disk, as a real store does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from tests.gateway import free_port
from tests.images import png
from tests.s3server import s3_server
from tests.seaweedfs import seaweedfs_server

MiB = 1024 * 1024
BOUNDARY = "bench-boundary"


def _cpu_s(pid: int) -> float:
    """The process's user + system CPU seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


async def _start(
    config: dict[str, Any], env: dict[str, str], home: str
) -> tuple[Any, str]:
    path = os.path.join(home, f"{uuid.uuid4().hex}.yaml")
    await asyncio.to_thread(Path(path).write_bytes, msgspec.yaml.encode(config))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--config", path, "--port", str(port),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(3000):
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return proc, base
        except aiohttp.ClientConnectorError:
            pass
        await asyncio.sleep(0.01)
    raise RuntimeError("imagegate did not start")


async def _upload(base: str, mib: int) -> float:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        'filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode() + png()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    chunk = bytes(MiB)

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(mib):
            yield chunk
        yield tail

    size = len(head) + mib * MiB + len(tail)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(size),
    }
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{base}/v3/upload", data=body(), headers=headers) as r,
    ):
        answer = await r.json()
        assert r.status == 200, answer
    return time.perf_counter() - started


async def _measure(
    name: str,
    files: dict[str, Any],
    env: dict[str, str],
    mib: int,
    repeat: int,
    home: str,
) -> None:
    config = {
        "server": {"access_log": False},
        "auth": "none",
        "providers": {"openai": {}},
        "files": {**files, "max_file_bytes": 2 * mib * MiB},
    }
    growths, rates, busy = [], [], []
    for _ in range(repeat):
        proc, base = await _start(config, env, home)
        try:
            await _upload(base, 1)  # warm: imports, pools, first part
            before = _status(proc.pid, "VmRSS")
            cpu = _cpu_s(proc.pid)
            seconds = await _upload(base, mib)
            growths.append((_status(proc.pid, "VmHWM") - before) / MiB)
            rates.append(mib / seconds)
            # The gateway's CPU over the upload's wall time: near 1, it bounds the rate.
            busy.append((_cpu_s(proc.pid) - cpu) / seconds)
        finally:
            proc.terminate()
            await proc.wait()
    print(
        f"{name}: peak RSS growth {statistics.median(growths):.1f} MiB "
        f"(max {max(growths):.1f}), {statistics.median(rates):.0f} MiB/s, "
        f"gateway CPU {statistics.median(busy):.2f} of the wall time "
        f"(median of {repeat})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, s3_server(auth=False) as s3:
        bucket = s3.bucket(f"bench-{uuid.uuid4().hex[:8]}")
        await _measure(
            "local disk",
            {"dir": os.path.join(home, "store")},
            {},
            args.mib,
            args.repeat,
            home,
        )
        await _measure(
            "s3 (moto)",
            s3.files_config(bucket),
            s3.credentials,
            args.mib,
            args.repeat,
            home,
        )
    with tempfile.TemporaryDirectory() as home, seaweedfs_server() as weed:
        bucket = weed.bucket(f"bench-{uuid.uuid4().hex[:8]}")
        await _measure(
            "s3 (seaweedfs)",
            weed.files_config(bucket),
            weed.credentials,
            args.mib,
            args.repeat,
            home,
        )


if __name__ == "__main__":
    asyncio.run(main())
