"""JSON request bodies are bounded by configuration, not by what a request carries.

The red-team replay: parallel edits whose JSON bodies hold eleven 4 MB data URLs each
grew the process by 1.86 GB, all answered 200; a body with 3,000,000 unknown keys
stalled the event loop 1.37 s per million keys. Here the same shapes, scaled down:
bodies reserve twice their bytes from ``backpressure.max_json_memory_bytes`` as they
arrive (over it: 503 at once), and a body holding more than ``limits.max_json_members``
members is a 400 before anything is decoded.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import aiohttp
import msgspec
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from tests.conftest import StartProxy
from tests.fakes.openai import FakeOpenAI
from tests.gateway import (
    KEY_A,
    KEY_B,
    Gate,
    data_url,
    edit_body,
    eventually,
    key_entry,
    metric,
)
from tests.images import sized_png

MiB = 1024 * 1024
EDITS = "/v3/images/edits"


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


def _big_edit(images: int, image_bytes: int) -> bytes:
    """The attack's shape: one JSON edit with ``images`` data URLs (11 in the replay)."""
    refs = [{"image_url": data_url(sized_png(image_bytes - i))} for i in range(images)]
    body = {"model": "openai/gpt-image-2", "prompt": "a hat", "images": refs}
    return msgspec.json.encode(body)


async def _post(
    proxy: TestServer, body: bytes, path: str = EDITS, key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url(path), data=io.BytesIO(body), headers=headers) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


async def test_parallel_big_json_edits_over_the_budget_get_503(
    start_proxy: StartProxy,
    held: tuple[FakeOpenAI, Gate],
    registry: CollectorRegistry,
) -> None:
    fake, gate = held
    budget = 24 * MiB
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        backpressure={"max_json_memory_bytes": budget, "retry_after_s": 2},
    )
    bodies = [_big_edit(11, 400_000) for _ in range(8)]  # 5.9 MB each
    size = len(bodies[0])

    async def release() -> None:
        # Whatever got through waits upstream until every other answer is in.
        async def settled() -> bool:
            return gate.arrived + refused == 8

        await eventually(settled)
        gate.open()

    refused = 0

    async def one(body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        nonlocal refused
        answer = await _post(proxy, body)
        refused += answer[0] != 200
        return answer

    _reset_peak_rss()
    before = _rss_kib("VmRSS")
    answers, _ = await asyncio.gather(
        asyncio.gather(*(one(b) for b in bodies)), release()
    )
    grown_mib = (_rss_kib("VmHWM") - before) / 1024
    statuses = sorted(a[0] for a in answers)
    assert set(statuses) == {200, 503}, statuses
    for status, answer, headers in answers:
        if status == 503:
            assert answer["error"]["code"] == "overloaded"
            assert "JSON bodies in memory" in answer["error"]["message"]
            assert headers["Retry-After"] == "2"
    # One client (its address) holds at most half the budget while it has others in
    # flight: 12 MiB, one body (2 x 5.9 MB reserved) at a time.
    assert statuses.count(200) <= 2
    assert len(fake.received) == statuses.count(200)
    # Unbounded, the eight bodies grew the process by ~8 x 2.75 x 5.9 MB (130 MiB).
    assert grown_mib < 120, f"{grown_mib:.0f} MiB for 8 x {size / MiB:.1f} MiB bodies"
    assert metric(registry, "imagegate_json_reserved_bytes") == 0


async def test_one_keys_bodies_leave_room_for_another_key(
    start_proxy: StartProxy, held: tuple[FakeOpenAI, Gate]
) -> None:
    fake, gate = held
    proxy = await start_proxy(
        {"openai": {"base_url": fake.url}},  # type: ignore[attr-defined]
        keys={"team-a": key_entry(KEY_A), "team-b": key_entry(KEY_B)},
        backpressure={"max_json_memory_bytes": 24 * MiB},
    )
    body = _big_edit(11, 400_000)  # 2 x 5.9 MB reserved: one fits a 12 MiB share
    refused = 0

    async def one(key: str) -> int:
        nonlocal refused
        status = (await _post(proxy, body, key=key))[0]
        refused += status == 503
        return status

    flood = [asyncio.ensure_future(one(KEY_A)) for _ in range(8)]

    async def settled() -> bool:
        return gate.arrived + refused == 8

    await eventually(settled)  # team-a: its share held upstream, the rest refused
    other = asyncio.ensure_future(one(KEY_B))
    await gate.wait_for(gate.arrived + 1)  # team-b's body was read and sent on
    gate.open()
    statuses = await asyncio.gather(*flood)
    assert await other == 200
    assert statuses.count(503) >= 6, statuses
    assert set(statuses) == {200, 503}


async def test_a_lone_body_is_admitted_past_the_budget(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    # The budget bounds bodies held together; one body is bounded by max_json_bytes.
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
        backpressure={"max_json_memory_bytes": 1 * MiB},
    )
    status, answer, _ = await _post(proxy, _big_edit(4, 400_000))
    assert status == 200, answer
    assert len(fake_openai.received) == 1


def _many_keys(count: int) -> bytes:
    members = b",".join(b'"k%07d":1' % i for i in range(count))
    return b'{"model":"openai/gpt-image-2","prompt":"a cat",' + members + b"}"


async def test_millions_of_unknown_keys_are_a_400_without_stalling(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
    )
    attack = _many_keys(1_000_000)  # 12 MB; the replay sent 3,000,000 (38 MB)
    probes: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        async with aiohttp.ClientSession() as s:
            while not done.is_set():
                start = time.perf_counter()
                async with s.get(proxy.make_url("/healthz")) as r:
                    assert r.status == 200
                probes.append(time.perf_counter() - start)
                await asyncio.sleep(0.005)

    async def attacks() -> list[tuple[int, dict[str, Any], dict[str, str]]]:
        try:
            paths = [EDITS, EDITS, "/v3/images/generations"]
            return list(await asyncio.gather(*(_post(proxy, attack, p) for p in paths)))
        finally:
            done.set()

    answers, _ = await asyncio.gather(attacks(), probe())
    for status, answer, _ in answers:
        assert status == 400, answer
        assert answer["error"]["code"] == "too_many_members"
        assert "limits.max_json_members" in answer["error"]["message"]
    assert fake_openai.received == []
    # Decoding a million keys stalled the loop about 1.4 s; counting them takes
    # milliseconds. A loose bound: the probe is in the same process as the client.
    assert max(probes) < 0.5, max(probes)


async def test_a_legitimate_full_edit_passes(
    start_proxy: StartProxy, fake_openai: FakeOpenAI
) -> None:
    proxy = await start_proxy(
        {"openai": {"base_url": fake_openai.url}},  # type: ignore[attr-defined]
    )
    body = edit_body(
        "openai/gpt-image-2",
        images=16,
        prompt="a hat: red, wide-brimmed, feathered; " * 800,  # 3,200 ':' and ','
        metadata={f"k{i}": f"v{i}" for i in range(16)},
        extra_headers={"X-Trace": "1"},
        user="u",
        quality="high",
    )
    status, answer, _ = await _post(proxy, msgspec.json.encode(body))
    assert status == 200, answer
    assert len(fake_openai.received) == 1
