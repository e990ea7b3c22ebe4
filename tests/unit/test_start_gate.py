"""``StartGate``: at most ``per_turn`` passes in any one turn of the event loop.

A pass is a ``take`` while the gate is open or a waiter woken by its turn. Before, a
turn could hold the waiters woken at the end of the previous one plus a fresh
``per_turn`` of takes: up to twice the bound (this test saw 4 and 3 passes of 2).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from proxy.backpressure import StartGate
from tests.loop_turns import TurnCounter


@pytest.mark.parametrize(("per_turn", "tasks"), [(2, 3), (2, 5), (3, 8), (3, 40)])
async def test_no_turn_holds_more_than_per_turn_passes(
    per_turn: int, tasks: int
) -> None:
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


async def test_a_lone_pass_does_not_wait() -> None:
    gate = StartGate(2)
    assert gate.open
    gate.take()
    gate.take()
    assert not gate.open  # spent for this turn
    await asyncio.sleep(0)  # the turn ends
    await asyncio.sleep(0)
    assert gate.open
