"""A bounded soak: a real proxy process under steady mixed traffic (valid, invalid,
failing upstream, slow upstream, clients that vanish). Afterwards its file descriptors,
temp files and memory are back near their baseline, and every request is accounted for
in its metrics.

SOAK_SECONDS sets the length (`make soak` runs 120 s; the default suite a short one).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import UPSTREAM_KEY, AiohttpServer, leftover_files
from tests.fakes.openai import images_reply
from tests.images import png

SECONDS = float(os.environ.get("SOAK_SECONDS", "6"))
RATE_PER_S = 40
CONCURRENCY = 8
FD_TOLERANCE = CONCURRENCY + 6  # pooled upstream connections may differ
RSS_TOLERANCE_KIB = 40 * 1024
KINDS = ("multipart", "json", "invalid", "upstream_fail", "upstream_slow", "abort")


async def soak_upstream(request: web.Request) -> web.Response:
    if request.content_type == "multipart/form-data":
        prompt = (await request.post()).get("prompt")
    else:
        prompt = msgspec.json.decode(await request.read()).get("prompt")
    if prompt == "fail":
        return web.json_response({"error": {"message": "boom"}}, status=500)
    if prompt == "slow":
        await asyncio.sleep(0.2)
    return web.json_response(images_reply())


def proc_stats(pid: int) -> tuple[int, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return fds, int(line.split()[1])
    raise AssertionError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one(session: aiohttp.ClientSession, base: str, kind: str, port: int) -> None:
    url = f"{base}/v3/images/edits"
    if kind == "multipart":
        form = aiohttp.FormData()
        form.add_field("model", "openai/gpt-image-2")
        form.add_field("prompt", "ok")
        form.add_field("image", png(16, 16), filename="a.png")
        async with session.post(url, data=form) as r:
            assert r.status == 200, await r.text()
    elif kind == "abort":
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v3/images/edits HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 99999\r\n\r\n"
            b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
            + png()
        )
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.transport.abort()
    else:
        prompt = {"upstream_fail": "fail", "upstream_slow": "slow"}.get(kind, "ok")
        image = "data:image/png;base64," + base64.b64encode(png()).decode()
        body: dict[str, object] = {"model": "openai/gpt-image-2", "prompt": prompt,
                "images": [{"image_url": image}]}  # fmt: skip
        if kind == "invalid":
            body["n"] = 99
        expected = {
            "json": 200,
            "invalid": 400,
            "upstream_fail": 502,
            "upstream_slow": 200,
        }
        async with session.post(url, json=body) as r:
            assert r.status == expected[kind], await r.text()


async def drive(base: str, port: int, seconds: float, sent: Counter[str]) -> None:
    sem = asyncio.Semaphore(CONCURRENCY)
    tasks = []
    async with aiohttp.ClientSession() as session:

        async def run(kind: str) -> None:
            async with sem:
                await one(session, base, kind, port)
                sent[kind] += 1

        start = time.monotonic()
        i = 0
        while time.monotonic() - start < seconds:
            tasks.append(asyncio.ensure_future(run(KINDS[i % len(KINDS)])))
            i += 1
            await asyncio.sleep(1 / RATE_PER_S)
        await asyncio.gather(*tasks)


async def scrape(session: aiohttp.ClientSession, base: str) -> float:
    async with session.get(f"{base}/metrics") as r:
        text = await r.text()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name == "imagegate_requests_total"
                and s.labels["route"] == "/v3/images/edits"
            ):
                total += s.value
    return total


async def test_soak(
    aiohttp_server: AiohttpServer, tmp_path: Path, repo_root: Path
) -> None:
    app = web.Application()
    app.router.add_post("/v1/images/edits", soak_upstream)
    upstream: TestServer = await aiohttp_server(app)
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    port = free_port()
    config = tmp_path / "soak.yaml"
    config.write_text(
        f"server: {{port: {port}, access_log: false}}\n"
        f"limits: {{temp_dir: {temp_root}}}\n"
        f"providers:\n  openai:\n    base_url: {upstream.make_url('/v1')}\n"
    )
    env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--config", str(config), env=env, cwd=repo_root
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{base}/healthz"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            warm: Counter[str] = Counter()
            await drive(base, port, 1.0, warm)
            await asyncio.sleep(0.5)
            fds0, rss0 = proc_stats(proc.pid)
            sent: Counter[str] = Counter()
            await drive(base, port, SECONDS, sent)
            await asyncio.sleep(1.0)
            fds1, rss1 = proc_stats(proc.pid)
            counted = await scrape(session, base)
    finally:
        proc.terminate()
        code = await proc.wait()
    assert code == 0
    assert sum(sent.values()) >= RATE_PER_S * SECONDS * 0.5
    # sent = answered: every request that reached the proxy is in its metrics.
    assert counted == sum(sent.values()) + sum(warm.values())
    assert fds1 <= fds0 + FD_TOLERANCE, (fds0, fds1)
    assert rss1 <= rss0 + RSS_TOLERANCE_KIB, (rss0, rss1)
    assert leftover_files(temp_root) == []
