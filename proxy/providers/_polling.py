"""Submit-then-poll providers: the poll loop with its deadline, and the host allowlist
that keeps polling and result URLs on the provider's own hosts.

A provider hands back URLs to poll and to download; following any URL it names would
let a compromised or spoofed reply point the gateway (and, for polling, its API key) at
any host. URLs are followed only when ``scheme://host[:port]`` matches a configured
shell-style pattern. The URL is parsed by yarl, as aiohttp will parse it when sending,
so the host checked is the host connected to; a default port is left out of the origin
and URLs carrying credentials (``user@host``) are refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from fnmatch import fnmatchcase
from typing import TypeVar

from yarl import URL

from proxy.context import add_upstream_time
from proxy.errors import UpstreamProtocolError, UpstreamTimeout

T = TypeVar("T")


_DEFAULT_PORTS = {"https": 443, "http": 80}


def origin(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, the port only if not the default;
    None for another scheme, no host, credentials in the URL, or no valid URL at all."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return None
    host = parsed.raw_host
    if (
        parsed.scheme not in _DEFAULT_PORTS
        or not host
        or parsed.user is not None
        or parsed.password is not None
    ):
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parsed.port
    suffix = "" if port == _DEFAULT_PORTS[parsed.scheme] else f":{port}"
    return f"{parsed.scheme}://{host.lower()}{suffix}"


def host_allowed(url: str, patterns: Sequence[str]) -> bool:
    found = origin(url)
    if found is None:
        return False
    return any(fnmatchcase(found, p.lower()) for p in patterns)


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
