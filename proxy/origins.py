"""Keyless mode's defence against web pages: the ``Host`` and browser-origin checks.

Without client keys the gateway spends its provider keys for anyone who reaches it, and
on a developer machine that includes every web page the browser opens. A cross-site page
can POST a multipart edit without a CORS preflight, and a DNS-rebinding page (its own
name, resolved to 127.0.0.1) can read the answers, ``/v3/upload`` included. So, with no
keys configured:

- ``Host`` must name the listener: ``localhost``, a loopback address, the address the
  connection arrived on (``<pod IP>:<port>`` for a kubelet probe), ``server.host``, or
  a name in ``server.allowed_hosts``. A rebinding page sends its own name. Single-label
  names are not trusted either: LLMNR and NetBIOS let anyone on the LAN answer for
  them. The port is not compared: port forwards (``ssh -L``, ``kubectl port-forward``,
  ``docker -p``) change it, and the name alone is what a rebinding page cannot choose.
- A browser's cross-site or same-site request (``Sec-Fetch-Site``), or any ``Origin``, is
  refused unless the origin is in ``server.allowed_origins``. SDKs and curl send neither.

With client keys none of this applies: a page cannot send the key cross-site without a
CORS preflight, which the gateway never answers, and a rebinding page does not know it.
``/healthz`` and ``/readyz`` are exempt (probes carry whatever ``Host`` the prober
chose, and the answers hold nothing a page could use).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

from proxy.errors import Forbidden

_PROBES = frozenset({"/healthz", "/readyz"})
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
_BROWSER_SITES = frozenset({"cross-site", "same-site"})
_ACCEPTED_KEPT = 64


def host_name(host: str) -> str:
    """The name of a ``Host`` value, lowercased, without port, brackets or final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit():
        host = name
    return host.rstrip(".")


def origin_key(origin: str) -> str:
    """An origin as browsers serialize it, for comparison: lowercase, no final slash."""
    return origin.strip().lower().rstrip("/")


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True  # browsers resolve *.localhost to loopback themselves
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _same_address(name: str, local: str | None) -> bool:
    if local is None:
        return False
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(local)
    except ValueError:
        return False


class OriginPolicy:
    """What keyless mode accepts, built once from ``server:``."""

    def __init__(
        self, *, listen_host: str, hosts: Iterable[str], origins: Iterable[str]
    ) -> None:
        names = {host_name(h) for h in hosts}
        self.any_host = "*" in names
        if host_name(listen_host) not in _WILDCARDS:
            names.add(host_name(listen_host))
        self.hosts = frozenset(names - {"*"})
        self.origins = frozenset(origin_key(o) for o in origins)
        self.accepted: set[str] = set()  # ``Host`` values accepted, as sent

    def check_host(self, host: str | None, local: str | None) -> None:
        if host is None or self.any_host:
            return  # HTTP/1.0 without Host: no browser sends that
        name = host_name(host)
        if name in self.hosts:
            if len(self.accepted) < _ACCEPTED_KEPT and len(host) <= 255:
                # Seen again, not parsed again (``check_request``). Only names of
                # ``hosts`` are kept, never a connection's own address, which
                # another connection may not share; bounded in count and length,
                # the header being the client's.
                self.accepted.add(host)
            return
        if _is_loopback(name) or _same_address(name, local):
            return
        raise Forbidden(
            f"Host '{host}' does not name this gateway; without client keys it answers "
            "only to localhost, its own addresses and server.allowed_hosts",
            param="Host",
            code="host_not_allowed",
        )

    def check_origin(self, origin: str | None, site: str | None) -> None:
        if origin is not None and origin_key(origin) in self.origins:
            return
        if origin is None and (site or "").lower() not in _BROWSER_SITES:
            return  # not a browser, or the user's own navigation (site "none")
        raise Forbidden(
            "browser requests from other sites are refused without client keys; "
            "list the page's origin in server.allowed_origins",
            param="Origin" if origin is not None else "Sec-Fetch-Site",
            code="cross_site_request",
        )


def own_page(origin: str | None, site: str | None, host: str | None) -> bool:
    """A request from the gateway's own page (``/ui``): the browser says same-origin
    and the Origin names the Host, which ``check_host`` has already accepted.

    Browsers send Origin on every POST, same-origin ones too. A rebinding page is
    same-origin with itself as well, but its Host is its own name, refused above.
    """
    if origin is None or host is None or (site or "").lower() != "same-origin":
        return False
    _, sep, rest = origin_key(origin).partition("://")
    return bool(sep) and rest == host.strip().lower()


def _local_address(request: web.Request) -> str | None:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport else None
    if isinstance(sockname, tuple) and sockname:
        return str(sockname[0]).partition("%")[0]  # an IPv6 scope id is not compared
    return None


# Set by create_app only when no client keys exist. Kept here, not in proxy.state:
# the settings know no routes, and this is the HTTP layer's own policy.
ORIGINS = web.AppKey("origins", OriginPolicy)


def check_request(policy: OriginPolicy, request: web.Request) -> None:
    """``policy``'s checks of one request, the probes exempt. ``guard.guard`` runs them
    first, for every route, when ``ORIGINS`` is set: a step of that middleware, not a
    middleware of its own (a coroutine frame more on every step of every request)."""
    if request.path in _PROBES:
        return
    headers = request.headers
    host = headers.get("Host")
    if host not in policy.accepted:
        policy.check_host(host, _local_address(request))
    origin, site = headers.get("Origin"), headers.get("Sec-Fetch-Site")
    # Neither header: not a browser (SDKs, curl), nothing to check.
    if (origin is not None or site is not None) and not own_page(origin, site, host):
        policy.check_origin(origin, site)
