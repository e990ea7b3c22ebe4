"""A real ``imagegate`` killed with SIGKILL mid-upload leaves files behind; the next
start removes them, and never a live sibling's upload still being written."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.conftest import UPSTREAM_KEY, leftover_files
from tests.fakes.openai import FakeOpenAI
from tests.gateway import eventually, free_port
from tests.images import png

BOUNDARY = "leftoverboundary"


class Process:
    def __init__(self, proc: asyncio.subprocess.Process, base: str) -> None:
        self.proc, self.base = proc, base

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await self.proc.wait()


async def _start(config_path: Path) -> Process:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--config", str(config_path),
        "--port", str(port),
        env={**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        assert proc.returncode is None, "imagegate exited during start"
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/readyz") as r:
                return r.status == 200
        except aiohttp.ClientConnectionError:
            return False

    await eventually(ready)
    return Process(proc, base)


def _config(tmp_path: Path, temp_root: Path, upstream: str, **files: Any) -> Path:
    config = {
        "server": {"access_log": False, "shutdown_timeout_s": 5},
        # spool_bytes 0: an edit's image goes to a temp file at once.
        "limits": {"temp_dir": str(temp_root), "spool_bytes": 0},
        "files": files,
        "providers": {"openai": {"base_url": upstream}},
    }
    path = tmp_path / "imagegate.yaml"
    path.write_bytes(msgspec.yaml.encode(config))
    return path


def _head(field: str, extra: bytes = b"") -> bytes:
    return (
        extra
        + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
    )


def _text(name: str, value: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        f"{value}\r\n"
    ).encode()


async def _post_held(
    base: str, path: str, head: bytes, release: asyncio.Event
) -> int | None:
    """Send ``head`` and an image's first half, wait for ``release``, then the rest;
    the status, or None when the server went away."""
    image = png(64, 64) + b"\0" * 65536

    async def body() -> AsyncIterator[bytes]:
        yield head + image[:40000]
        await release.wait()
        yield image[40000:] + f"\r\n--{BOUNDARY}--\r\n".encode()

    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(base + path, data=body(), headers=headers) as r,
        ):
            await r.read()
            return r.status
    except aiohttp.ClientError:
        return None


def _parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.part") if p.is_file()]


def _dirs(root: Path, prefix: str) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith(prefix))


async def _when(check: Any) -> None:
    async def go() -> bool:
        return bool(await asyncio.to_thread(check))

    await eventually(go)


@pytest.mark.parametrize("persistent", [True, False], ids=["files.dir", "temporary"])
async def test_a_killed_process_leaves_nothing_after_the_next_start(
    fake_openai: FakeOpenAI, tmp_path: Path, temp_root: Path, persistent: bool
) -> None:
    store = tmp_path / "store"
    files = {"dir": str(store)} if persistent else {}
    path = _config(tmp_path, temp_root, fake_openai.url, **files)  # type: ignore[attr-defined]
    first = await _start(path)
    release = asyncio.Event()
    edit_head = _text("model", "openai/gpt-image-2.5-sunburst") + _text(
        "prompt", "a hat"
    )
    held = [
        asyncio.ensure_future(
            _post_held(first.base, "/v3/upload", _head("file"), release)
        ),
        asyncio.ensure_future(
            _post_held(first.base, "/v3/images/edits", _head("image", edit_head), release)
        ),
    ]  # fmt: skip
    # One .part in the store, one in the process's temp directory.
    await _when(lambda: len(_parts(tmp_path)) == 2)
    await first.kill()
    assert await asyncio.gather(*held) == [None, None]
    # Its temp directory, and with the default store the store's, are left behind.
    stale = _dirs(temp_root, "imagegate-")
    assert len(stale) == (1 if persistent else 2)
    assert len(_parts(tmp_path)) == 2

    second = await _start(path)
    try:
        assert _parts(tmp_path) == []
        assert [p for p in stale if p.exists()] == []
        assert len(_dirs(temp_root, "imagegate-")) == (1 if persistent else 2)
    finally:
        assert await second.stop() == 0
    assert leftover_files(temp_root) == []


async def test_a_live_sibling_s_upload_is_left_alone(
    fake_openai: FakeOpenAI, tmp_path: Path, temp_root: Path
) -> None:
    store = tmp_path / "store"
    path = _config(tmp_path, temp_root, fake_openai.url, dir=str(store))  # type: ignore[attr-defined]
    first = await _start(path)
    second: Process | None = None
    release = asyncio.Event()
    held = asyncio.ensure_future(
        _post_held(first.base, "/v3/upload", _head("file"), release)
    )
    try:
        await _when(lambda: len(_parts(store)) == 1)
        # A sibling starting on the same directory sweeps it at start-up.
        second = await _start(path)
        assert len(_parts(store)) == 1
        release.set()
        assert await held == 200
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{second.base}/v3/upload") as r,
        ):
            listing = await r.json()
        assert len(listing["data"]) == 1
    finally:
        release.set()
        with contextlib.suppress(Exception):
            await held
        for proc in (first, second):
            if proc is not None:
                assert await proc.stop() == 0
