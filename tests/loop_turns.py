"""Numbering the event loop's turns, for tests of what one turn may hold."""

from __future__ import annotations

import asyncio
from typing import Any, cast


class TurnCounter:
    """Numbers the running asyncio loop's turns by wrapping its ``_run_once``: the
    test observes, the loop itself runs unchanged. ``close`` unwraps it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.turn = 0
        self._loop: Any = cast(Any, loop)  # a private method, swapped for the test
        self._run_once = self._loop._run_once
        self._loop._run_once = self._step

    def _step(self) -> None:
        self.turn += 1
        self._run_once()

    def close(self) -> None:
        del self._loop._run_once
