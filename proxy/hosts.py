"""Host allowlists for URLs a provider hands back (to poll, to download) and for where
credentials may go.

Following any URL a provider names would let a compromised or spoofed reply point the
gateway (and, for polling, its API key) at any host. A URL is followed only when its
``scheme://host[:port]`` matches a configured shell-style pattern. The URL is parsed by
yarl, as aiohttp parses it when sending, so the host checked is the host connected to;
a default port is left out of the origin and URLs carrying credentials (``user@host``)
are refused. A leaf module: it imports nothing of the proxy's but its errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from yarl import URL

from proxy.errors import UpstreamProtocolError

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
