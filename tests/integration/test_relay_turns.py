"""Relays take turns (``Pressure.relays``, ``backpressure.relay_steps_per_turn``).

When many providers answer at once, every relay used to handle its pieces in the same
turn of the event loop (issue 19: turns of up to 0.6 s of CPU at C = 1,000, /healthz
waiting behind them). Here a turn handles at most the configured number of pieces,
the others wait with their upstream connection paused, and every answer is still the
provider's, byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from proxy.state import PRESSURE
from proxy.turns import StartGate
from tests.conftest import StartProxy
from tests.loop_turns import TurnCounter

KiB = 1024
RELAYS = 16
PER_TURN = 2


class CountingGate(StartGate):
    """A ``StartGate`` that records the turn each pass happens in."""

    def __init__(self, per_turn: int, turns: TurnCounter) -> None:
        super().__init__(per_turn)
        self.turns = turns
        self.passes: Counter[int] = Counter()
        self.waited = 0
        self.queued = asyncio.Event()  # a relay waits for its turn

    def take(self) -> None:
        self.passes[self.turns.turn] += 1
        super().take()

    async def wait(self) -> None:
        self.waited += 1
        self.queued.set()
        await super().wait()
        self.passes[self.turns.turn] += 1


def reply(i: int) -> bytes:
    image = base64.b64encode(os.urandom(600 * KiB)).decode()
    body = {"created": i, "data": [{"b64_json": image}], "usage": None}
    return msgspec.json.encode(body)


async def test_relays_take_turns_and_answer_byte_for_byte(
    aiohttp_server: AiohttpServer, start_proxy: StartProxy
) -> None:
    bodies = [reply(i) for i in range(RELAYS)]
    arrived = 0
    all_arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal arrived
        i = (await request.json())["prompt"]
        arrived += 1
        if arrived == RELAYS:
            all_arrived.set()
        await all_arrived.wait()  # every provider answers at once, whole
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(bodies[int(i)])
        await resp.write_eof()
        return resp

    upstream_app = web.Application()
    upstream_app.router.add_post("/v1/images/generations", handle)
    upstream = await aiohttp_server(upstream_app)
    proxy: TestServer = await start_proxy(
        {"openai": {"base_url": str(upstream.make_url("/v1"))}},
        backpressure={"relay_steps_per_turn": PER_TURN},
    )
    turns = TurnCounter(asyncio.get_running_loop())
    gate = proxy.app[PRESSURE].relays = CountingGate(PER_TURN, turns)
    health_turn: list[int] = []

    async def edit(s: aiohttp.ClientSession, i: int) -> bytes:
        body = {"model": "openai/gpt-image-2", "prompt": str(i)}
        async with s.post(proxy.make_url("/v3/images/generations"), json=body) as r:
            assert r.status == 200
            return await r.read()

    async def health(s: aiohttp.ClientSession) -> None:
        await all_arrived.wait()
        await gate.queued.wait()
        async with s.get(proxy.make_url("/healthz")) as r:
            assert r.status == 200
        health_turn.append(turns.turn)

    try:
        async with aiohttp.ClientSession() as s:
            got, _ = await asyncio.gather(
                asyncio.gather(*(edit(s, i) for i in range(RELAYS))), health(s)
            )
    finally:
        turns.close()

    for i, raw in enumerate(got):
        # The provider's bytes as they were, then ours in place of its closing brace.
        assert raw.startswith(bodies[i][:-1] + b',"provider":"openai","cost":')
        assert msgspec.json.decode(raw)["created"] == i
    assert max(gate.passes.values()) == PER_TURN
    assert gate.waited > 0
    # /healthz was answered while relays still had pieces waiting for their turns.
    assert health_turn[0] < max(gate.passes)


class SlowGate(StartGate):
    """Every piece waits for its turn, the first one ``first_s`` seconds: a relay
    behind a long queue of others."""

    def __init__(self, first_s: float, waited: asyncio.Event) -> None:
        super().__init__(1)
        self.first_s = first_s
        self.waited = waited

    @property
    def open(self) -> bool:
        return False

    async def wait(self) -> None:
        if not self.waited.is_set():
            await asyncio.sleep(self.first_s)
            self.waited.set()
        await super().wait()


async def test_a_relay_waiting_for_its_turn_is_not_the_providers_idle_time(
    aiohttp_server: AiohttpServer, start_proxy: StartProxy
) -> None:
    # The provider sends a first part, then nothing until the relay has waited for
    # its turn longer than the provider's read timeout (0.3 s). Without the pause
    # in ``UpstreamStream.wait_turn`` that wait was charged to the provider: its
    # read timed out and the client's connection was cut.
    body = reply(0)
    waited = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(body[: 100 * KiB])  # past what is read whole
        await waited.wait()
        await resp.write(body[100 * KiB :])
        await resp.write_eof()
        return resp

    upstream_app = web.Application()
    upstream_app.router.add_post("/v1/images/generations", handle)
    upstream = await aiohttp_server(upstream_app)
    pool = {"total_timeout_s": 10.0, "read_timeout_s": 0.3}
    proxy: TestServer = await start_proxy(
        {"openai": {"base_url": str(upstream.make_url("/v1")), "pool": pool}}
    )
    proxy.app[PRESSURE].relays = SlowGate(0.9, waited)
    request = {"model": "openai/gpt-image-2", "prompt": "p"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/images/generations"), json=request) as r,
    ):
        assert r.status == 200
        raw = await r.read()
    assert raw.startswith(body[:-1] + b',"provider":"openai","cost":')
