"""A gate that lets at most N callers through per turn of the event loop.

Used for the requests that start in one turn (``proxy.admission``) and the reply pieces
relays handle in one (``proxy.passthrough``): a thousand connections ready at once
would otherwise all run in one turn, with ``/healthz`` waiting behind them. A leaf
module, so the upstream side can take turns without importing backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque


class StartGate:
    """At most ``per_turn`` passes per turn of the loop; the rest wait in order.

    A waiter woken by ``_turn`` passes in the next turn, and a ``take`` between two
    ``_turn`` callbacks may fall on either side of a turn's end, so each is counted
    against both turns it may be in: a turn never holds more than ``per_turn``."""

    __slots__ = (
        "_armed",
        "_context",
        "_left",
        "_loop",
        "_taken",
        "_tick",
        "_waiting",
        "_woken",
        "per_turn",
    )

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self._left = per_turn
        self._taken = 0  # takes since the last ``_turn``
        self._woken = 0  # waiters the last ``_turn`` woke
        self._armed = False
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Made once, not per callback: a bound method, and the context the loop
        # would otherwise copy for each (``_turn`` reads no context variable).
        self._tick = self._turn
        self._context = contextvars.Context()

    @property
    def open(self) -> bool:
        """Whether a request may start in this turn without waiting."""
        return self._left > 0 and not self._waiting

    def take(self) -> None:
        """Start now (``open`` was true)."""
        self._left -= 1
        self._taken += 1
        self._arm()

    async def wait(self) -> None:
        """Wait for a start in a later turn, in arrival order."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._arm()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._left += 1  # woken, then cancelled: its start is another's
            with contextlib.suppress(ValueError):
                self._waiting.remove(future)
            raise

    def _arm(self) -> None:
        # A callback scheduled now runs in the next turn: that is the turn's end.
        if not self._armed:
            self._armed = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._tick, context=self._context)

    def _turn(self) -> None:
        self._armed = False
        # Passes that may be in this turn: those woken last time (they ran just
        # before this callback) and every take since.
        spent = self._woken + self._taken
        waiting = self._waiting
        if not waiting:  # uncontended, the usual case: what follows, shortened
            self._woken = self._taken = 0
            self._left = left = max(0, self.per_turn - spent)
            if left < self.per_turn:
                self._arm()
            return
        woken = 0
        while woken < self.per_turn and waiting:
            future = waiting.popleft()
            if not future.done():
                future.set_result(None)  # its step runs in the next turn
                woken += 1
        self._woken, self._taken = woken, 0
        # Takes from now on are in this turn or the next one, with those woken.
        self._left = max(0, self.per_turn - max(spent, woken))
        if waiting or self._left < self.per_turn:
            self._arm()
