"""``backpressure.StartGate``: how many requests start per turn of the event loop
(``proxy.admission``; issue 19: a burst's starts all ran in one turn of 0.4 s)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from proxy.turns import StartGate
from tests.loop_turns import TurnCounter


async def _through(gate: StartGate, order: list[int], turn: list[int], i: int) -> None:
    if gate.open:
        gate.take()
    else:
        await gate.wait()
    order.append(i)
    turn.append(TURN[0])


TURN = [0]


async def _count_turns(stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(0)
        TURN[0] += 1


async def test_at_most_per_turn_start_in_a_turn_in_arrival_order() -> None:
    gate = StartGate(per_turn=3)
    TURN[0] = 0
    order: list[int] = []
    turns: list[int] = []
    stop = asyncio.Event()
    ticker = asyncio.ensure_future(_count_turns(stop))
    await asyncio.gather(*(_through(gate, order, turns, i) for i in range(10)))
    stop.set()
    await ticker
    assert order == list(range(10))
    per_turn = {t: turns.count(t) for t in turns}
    assert max(per_turn.values()) <= 3
    # Every turn while requests waited let the full number start: none is starved.
    assert len(per_turn) == 4


async def test_a_waiter_cancelled_before_its_turn_takes_no_start() -> None:
    gate = StartGate(per_turn=1)
    gate.take()  # this turn's one start
    first = asyncio.ensure_future(gate.wait())
    second = asyncio.ensure_future(gate.wait())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    await asyncio.wait_for(second, 1)
    assert first.cancelled()


def _open(gate: StartGate) -> bool:
    # Read through a call: mypy narrows ``gate.open`` after an assert on it.
    return gate.open


async def test_an_idle_gate_is_open_and_stops_scheduling() -> None:
    gate = StartGate(per_turn=2)
    assert _open(gate)
    gate.take()
    gate.take()
    assert not _open(gate)  # this turn's starts are taken
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert _open(gate)  # a new turn: starts again
    assert not gate._armed  # nothing waits and nothing started: no callback per turn


@pytest.mark.parametrize(("per_turn", "tasks"), [(2, 3), (2, 5), (3, 8), (3, 40)])
async def test_no_loop_turn_holds_more_than_per_turn_passes(
    per_turn: int, tasks: int
) -> None:
    # Counted in the loop's own turns (``TurnCounter``). Before, a turn could hold
    # the waiters woken at the end of the previous one plus a fresh ``per_turn`` of
    # takes: up to twice the bound (this test saw 4 and 3 passes of 2).
    steps = 30
    gate = StartGate(per_turn)
    turns = TurnCounter(asyncio.get_running_loop())
    passes: Counter[int] = Counter()
    rng = random.Random(19)
    pauses = [[rng.randrange(4) for _ in range(steps)] for _ in range(tasks)]

    async def step_through(mine: list[int]) -> None:
        for pause in mine:
            for _ in range(pause):  # work spread over turns, as relays' pieces come
                await asyncio.sleep(0)
            if gate.open:
                gate.take()
            else:
                await gate.wait()
            passes[turns.turn] += 1

    try:
        await asyncio.gather(*(step_through(mine) for mine in pauses))
    finally:
        turns.close()
    assert sum(passes.values()) == tasks * steps
    assert max(passes.values()) == per_turn
