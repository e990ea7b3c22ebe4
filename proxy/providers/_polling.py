"""Submit-then-poll providers: the poll loop with its deadline, and the host allowlist
(``proxy.hosts``) that keeps polling and result URLs on the provider's own hosts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.context import add_upstream_time
from proxy.errors import UpstreamTimeout
from proxy.hosts import host_allowed, require_allowed

__all__ = ["host_allowed", "poll", "require_allowed"]

T = TypeVar("T")


async def poll(
    fetch: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    interval_s: float,
    deadline: float,
    provider: str,
) -> T:
    """Call ``fetch`` every ``interval_s`` until ``done``; past ``deadline`` (loop time)
    the job is abandoned with a 504."""
    loop = asyncio.get_running_loop()
    while True:
        state = await fetch()
        if done(state):
            return state
        if loop.time() + interval_s > deadline:
            raise UpstreamTimeout(
                f"provider '{provider}' did not finish the job in time",
                provider=provider,
                code="upstream_timeout",
            )
        # Waiting on the provider is upstream time, not the gateway's overhead.
        started = loop.time()
        await asyncio.sleep(interval_s)
        add_upstream_time(loop.time() - started)
