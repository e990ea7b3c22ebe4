"""Submit-then-poll providers: the poll loop with its deadline, and the host allowlist
that keeps polling and result URLs on the provider's own hosts.

A provider hands back URLs to poll and to download; following any URL it names would
let a compromised or spoofed reply point the gateway (and, for polling, its API key) at
any host. URLs are followed only when ``scheme://host[:port]`` matches a configured
shell-style pattern.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from fnmatch import fnmatchcase
from typing import TypeVar
from urllib.parse import urlsplit

from proxy.context import add_upstream_time
from proxy.errors import UpstreamProtocolError, UpstreamTimeout

T = TypeVar("T")


def host_allowed(url: str, patterns: Sequence[str]) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return False
    origin = f"{parts.scheme}://{parts.netloc.lower()}"
    return any(fnmatchcase(origin, p.lower()) for p in patterns)


def require_allowed(url: str, patterns: Sequence[str], *, provider: str) -> str:
    if not host_allowed(url, patterns):
        raise UpstreamProtocolError(
            f"provider '{provider}' pointed at a URL outside its allowed hosts",
            provider=provider,
            code="upstream_protocol_error",
        )
    return url


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
