"""Images that cost far more to decode than to send: refused from their headers.

A 13000x13000 greyscale PNG is 170 KB on the wire and 169 MB per copy once decoded.
Providers that need a converted mask (FLUX Fill, Stability) would decode it; the gateway
refuses it with a 400 on ``mask`` before any decode and before any upstream call,
whether it comes as a multipart part or as a stored file id, and the process's peak
memory does not move. PNG text-chunk bombs are a 400 too, and Pillow's warnings reach
stderr only as JSON log lines.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import socket
import sys
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import openai
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import (
    UPSTREAM_KEY,
    ServeFake,
    StartGateway,
)
from tests.fakes.bfl import FakeBFL
from tests.fakes.openai import FakeOpenAI
from tests.fakes.stabilityai import FakeStability
from tests.images import flat_png, png, png_chunk

HUGE = 13000
MiB = 1024 * 1024


@functools.cache
def huge_png() -> bytes:
    return flat_png(HUGE, HUGE)


@dataclass
class Target:
    proxy: TestServer
    model: str
    upstream_calls: Callable[[], int]


Start = Callable[[str], Awaitable[Target]]


@pytest.fixture
def start(start_gateway: StartGateway) -> Start:
    async def go(provider: str) -> Target:
        if provider == "bfl":
            gateway = await start_gateway("bfl")
            bfl: FakeBFL = gateway.fake
            return Target(
                gateway.proxy, "bfl/flux-pro-1.0-fill", lambda: len(bfl.received)
            )
        gateway = await start_gateway("stabilityai")
        stability: FakeStability = gateway.fake
        return Target(
            gateway.proxy, "stabilityai/inpaint", lambda: len(stability.received)
        )

    return go


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def _reset_peak_rss() -> None:
    # Linux: writing 5 resets VmHWM to the current RSS (proc(5), clear_refs).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


async def _sdk_edit(target: Target, image: bytes, mask: bytes) -> None:
    async with openai.AsyncOpenAI(
        base_url=str(target.proxy.make_url("/v3")), api_key="c", max_retries=0
    ) as sdk:
        await sdk.images.edit(
            model=target.model,
            image=("a.png", image, "image/png"),
            mask=("m.png", mask, "image/png"),
            prompt="a red car",
        )


async def _upload(proxy: TestServer, data: bytes, name: str) -> str:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="image/png")
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/upload"), data=form)
        assert resp.status == 200, await resp.text()
        file_id: str = (await resp.json())["file_id"]
        return file_id


async def _json_edit(target: Target, image_id: str, mask_id: str) -> tuple[int, Any]:
    body = {"model": target.model, "prompt": "a red car",
            "images": [{"file_id": image_id}], "mask": {"file_id": mask_id}}  # fmt: skip
    async with aiohttp.ClientSession() as client:
        resp = await client.post(target.proxy.make_url("/v3/images/edits"), json=body)
        return resp.status, await resp.json()


@pytest.mark.parametrize("provider", ["bfl", "stabilityai"])
async def test_huge_mask_by_multipart_is_a_400_without_decoding(
    start: Start, provider: str
) -> None:
    target = await start(provider)
    bomb = huge_png()
    _reset_peak_rss()
    before = _rss_kib("VmRSS")
    with pytest.raises(openai.BadRequestError) as exc:
        await _sdk_edit(target, bomb, bomb)
    grown_mib = (_rss_kib("VmHWM") - before) / 1024
    assert exc.value.param == "mask"
    assert exc.value.code == "image_too_large"
    assert f"{HUGE}x{HUGE}" in str(exc.value.message)
    assert target.upstream_calls() == 0
    # One decoded copy alone would be 161 MiB.
    assert grown_mib < 48, f"peak RSS grew by {grown_mib:.0f} MiB"


@pytest.mark.parametrize("provider", ["bfl", "stabilityai"])
async def test_huge_mask_by_file_id_is_a_400_without_decoding(
    start: Start, provider: str
) -> None:
    target = await start(provider)
    bomb = huge_png()
    image_id = await _upload(target.proxy, bomb, "a.png")
    mask_id = await _upload(target.proxy, bomb, "m.png")
    _reset_peak_rss()
    before = _rss_kib("VmRSS")
    status, answer = await _json_edit(target, image_id, mask_id)
    grown_mib = (_rss_kib("VmHWM") - before) / 1024
    assert grown_mib < 48, f"peak RSS grew by {grown_mib:.0f} MiB"
    assert status == 400, answer
    assert answer["error"]["param"] == "mask"
    assert answer["error"]["code"] == "image_too_large"
    assert target.upstream_calls() == 0


async def test_four_huge_masks_at_once_do_not_add_up(start: Start) -> None:
    # The report's 5.8 GB case: four 180-byte JSON edits naming the same two ids.
    target = await start("stabilityai")
    bomb = huge_png()
    image_id = await _upload(target.proxy, bomb, "a.png")
    mask_id = await _upload(target.proxy, bomb, "m.png")
    _reset_peak_rss()
    before = _rss_kib("VmRSS")
    answers = await asyncio.gather(
        *(_json_edit(target, image_id, mask_id) for _ in range(4))
    )
    grown_mib = (_rss_kib("VmHWM") - before) / 1024
    assert grown_mib < 48, f"peak RSS grew by {grown_mib:.0f} MiB"
    assert [(s, a["error"]["param"]) for s, a in answers] == [(400, "mask")] * 4
    assert target.upstream_calls() == 0


async def test_huge_first_image_is_a_400_on_image(start: Start) -> None:
    target = await start("stabilityai")
    with pytest.raises(openai.BadRequestError) as exc:
        await _sdk_edit(target, huge_png(), flat_png(64, 64, color_type=4))
    assert exc.value.param == "image"
    assert exc.value.code == "image_too_large"
    assert target.upstream_calls() == 0


def _ztxt_bomb(chunks: int) -> bytes:
    """A valid 64x64 PNG whose zTXt chunks each inflate to 1 MiB."""
    text = png_chunk(b"zTXt", b"k\0\0" + zlib.compress(bytes(MiB), 9))
    return flat_png(64, 64, color_type=4, before_idat=text * chunks)


@pytest.mark.parametrize("provider", ["bfl", "stabilityai"])
async def test_png_text_chunk_bomb_mask_is_a_400(start: Start, provider: str) -> None:
    target = await start(provider)
    with pytest.raises(openai.BadRequestError) as exc:
        await _sdk_edit(target, png(64, 64), _ztxt_bomb(80))
    assert exc.value.param == "mask"
    assert exc.value.code == "invalid_image"
    assert target.upstream_calls() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def stability(serve_fake: ServeFake) -> str:
    return str((await serve_fake("stabilityai")).server.make_url(""))


async def test_pillow_warnings_reach_stderr_only_as_json(
    stability: str, tmp_path: Path, repo_root: Path
) -> None:
    # Two acTL chunks: Pillow warns "Invalid APNG" and reads the still image.
    actl = png_chunk(b"acTL", bytes(8))
    mask = flat_png(64, 64, color_type=4, before_idat=actl * 2)
    port = _free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"server: {{port: {port}}}\nauth: none\n"
        f"limits: {{temp_dir: {tmp_path}}}\n"
        f"providers:\n  stabilityai:\n    base_url: {stability}\n"
    )
    env = {**os.environ, "STABILITY_API_KEY": UPSTREAM_KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "--config", str(config),
        env=env, cwd=repo_root, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as client:
            for _ in range(200):
                try:
                    async with client.get(f"{base}/healthz"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            form = aiohttp.FormData()
            form.add_field("model", "stabilityai/inpaint")
            form.add_field("prompt", "a red car")
            form.add_field("image", png(64, 64), filename="a.png")
            form.add_field("mask", mask, filename="m.png")
            async with client.post(f"{base}/v3/images/edits", data=form) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert any("Invalid APNG" in line for line in lines), lines
    for line in lines:
        msgspec.json.decode(line)  # every line a JSON log record


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.mark.parametrize(("huge", "param"), [("mask", "mask"), ("image", "images[1]")])
async def test_huge_data_url_is_a_400_even_for_a_provider_that_decodes_nothing(
    proxy: TestServer, fake_openai: FakeOpenAI, huge: str, param: str
) -> None:
    # OpenAI takes the bytes as they are; the cap still holds for every input.
    small, bomb = _data_url(png(8, 8)), _data_url(huge_png())
    body = {
        "model": "openai/gpt-image-2",
        "prompt": "a red car",
        "images": [
            {"image_url": small},
            {"image_url": bomb if huge == "image" else small},
        ],
        "mask": {
            "image_url": bomb if huge == "mask" else _data_url(png(8, 8, alpha=0))
        },
    }
    async with aiohttp.ClientSession() as client:
        resp = await client.post(proxy.make_url("/v3/images/edits"), json=body)
        answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["error"]["param"] == param
    assert answer["error"]["code"] == "image_too_large"
    assert fake_openai.received == []
