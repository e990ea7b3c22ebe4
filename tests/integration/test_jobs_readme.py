"""The README's async-job examples run as written: the official OpenAI SDK sending
``Prefer: respond-async`` with ``extra_headers`` and reading the 202 through
``with_raw_response``, then polling; and the real curl getting the 202."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import msgspec
from aiohttp.test_utils import TestServer

from tests.fakes.openai import FakeOpenAI
from tests.gateway import eventually, get_text
from tests.integration.test_acceptance import _example_images, _readme_block
from tests.observability.procs import require_binary


async def test_readme_sdk_job_example_runs(
    proxy: TestServer, repo_root: Path, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    code = (
        _readme_block(repo_root, "python", "respond-async")
        .replace("http://127.0.0.1:8080", str(proxy.make_url("")).rstrip("/"))
        .replace("time.sleep(5)", "time.sleep(0.05)")
    )
    await asyncio.to_thread(_example_images, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    status, _, result = out.decode().partition(" ")
    assert status == "succeeded", out
    assert "'provider': 'openai'" in result
    assert [f.data for f in fake_openai.last.files] == [
        (tmp_path / "room.png").read_bytes(),
        (tmp_path / "lamp.png").read_bytes(),
    ]


async def test_readme_curl_job_example_answers_202(
    proxy: TestServer, repo_root: Path, tmp_path: Path
) -> None:
    require_binary("curl")
    block = _readme_block(repo_root, "sh", "Prefer: respond-async")
    first = block.split("\n# ")[0].replace(
        "localhost:8080", f"{proxy.host}:{proxy.port}"
    )
    await asyncio.to_thread(_example_images, tmp_path)
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", first, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    head, _, body = out.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 202")
    location = re.search(r"(?im)^Location: (\S+)", head)
    assert location is not None
    assert msgspec.json.decode(body)["status"] == "queued"

    async def done() -> bool:
        text = await get_text(proxy, location.group(1))
        return bool(msgspec.json.decode(text)["status"] == "succeeded")

    await eventually(done, within_s=20)
