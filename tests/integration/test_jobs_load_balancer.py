"""The issue's "done when", scaled down: a real nginx in front of the gateway cuts
requests after 1 s (a load balancer's 60 s) and the provider takes 3 s (a 2-minute
edit). Synchronously the client gets nginx's 504 while the provider still bills the
edit; as a job it gets its 202 at once and its image by polling through the same
nginx, from one upstream call."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import StartProxy
from tests.fakes.openai import FakeOpenAI, Reply, images_reply
from tests.gateway import KEY_A, free_port, providers_for
from tests.integration.test_jobs import ASYNC, form, keys
from tests.observability.procs import require_binary

_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{listen};
        client_max_body_size 0;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_read_timeout 1s;
        }}
    }}
}}
"""


@contextlib.asynccontextmanager
async def load_balancer(directory: Path, upstream: int) -> AsyncIterator[str]:
    binary = require_binary("nginx")
    port = free_port()
    conf = directory / "nginx.conf"
    conf.write_text(_CONF.format(dir=directory, listen=port, upstream=upstream))
    proc = await asyncio.create_subprocess_exec(
        binary, "-p", str(directory), "-c", str(conf), "-e", "stderr",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(500):
            assert proc.returncode is None, "nginx exited at start"
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.2),
            ):
                break
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


@pytest.fixture
async def gateway(start_proxy: StartProxy, fake_openai: FakeOpenAI) -> TestServer:
    return await start_proxy(providers_for(fake_openai), keys=keys())


async def _post(base: str, headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{base}/v3/images/edits",
            data=form(),
            headers={"Authorization": f"Bearer {KEY_A}", **headers},
        ) as r,
    ):
        return r.status, await r.text(), dict(r.headers)


async def test_a_long_edit_through_a_short_load_balancer(
    gateway: TestServer, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.script(
        Reply(body=images_reply(), delay_s=3), Reply(body=images_reply(), delay_s=3)
    )
    assert gateway.port is not None
    async with load_balancer(tmp_path, gateway.port) as lb:
        status, _, _ = await _post(lb, {})
        assert status == 504  # cut by the load balancer; the provider went on
        status, text, headers = await _post(lb, ASYNC)
        assert status == 202, text
        location = headers["Location"]
        polls = 0
        while True:
            polls += 1
            async with (
                aiohttp.ClientSession() as s,
                s.get(
                    f"{lb}{location}", headers={"Authorization": f"Bearer {KEY_A}"}
                ) as r,
            ):
                assert r.status == 200
                job = await r.json()
            if job["status"] not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.25)
    assert job["status"] == "succeeded"
    assert job["result"]["data"][0]["b64_json"]
    assert polls > 4  # the job outlived the load balancer's cut several times over
    assert len(fake_openai.received) == 2  # the cut request, and the job: once each
