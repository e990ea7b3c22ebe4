"""The proxy runs on uvloop (a pinned dependency) when it is installed."""

from __future__ import annotations

import uvloop

from proxy.__main__ import new_event_loop


def test_new_event_loop_is_uvloop() -> None:
    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(_answer()) == 42
    finally:
        loop.close()


async def _answer() -> int:
    return 42
